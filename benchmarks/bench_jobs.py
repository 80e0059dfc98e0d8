"""Job-sized fetching (issue 13), run by ``bench_perf.py`` on its servers and proxies.

5a. ``jinja-apsecrets render`` of a tree of 100 templates x 20 references over
    the 40 benchmark secrets (20 AWS, 20 Vault paths), in process: backend
    requests, and the network share (wall at the delay minus wall at 0 ms, in
    round trips). Target: 1 BatchGetSecretValue, 20 reads + at most 1 mount
    lookup, network share <= 3.5 round trips.
5b. 100 concurrent ``render_async`` of distinct templates sharing the 40
    secrets, cold, and 16 threads rendering distinct templates, cold: AWS
    calls (target <= 2 each).
5c. 10,000 references over 2,000 secrets (1,000 AWS secrets, 1,000 Vault
    paths, 5 keys each): round trips against the ideal (AWS: ceil(batches /
    concurrency); Vault: mount lookup + ceil(paths / concurrency); the two run
    side by side), target <= 1.1x.
5d. Start-up: ``jinja-apsecrets --help`` and a render of an env-only template
    against ``python -c "import jinja2, yaml, click"`` (target <= 2x), in
    fresh processes, best of several.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import jinja2
import yaml

from jinja_apsecrets import Resolver
from jinja_apsecrets.cli import main as cli

TEMPLATES = 100
REFS_PER_TEMPLATE = 20
THREADS = 16
CONCURRENCY = 16  # the connections' default
LARGE_SECRETS = 1000  # per backend
LARGE_KEYS = 5


@dataclass
class Case:
    """One measured case: wall times and the requests of one run at the delay."""

    label: str
    walls: list[float] = field(default_factory=list)
    walls_zero: list[float] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    ideal: float = math.nan
    note: str = ""
    spans: list[float] = field(default_factory=list)

    # Best of the runs on each side: the machine is shared, and noise only adds.
    @property
    def wall(self) -> float:
        return min(self.walls) if self.walls else math.nan

    @property
    def wall_zero(self) -> float:
        return min(self.walls_zero) if self.walls_zero else math.nan

    @property
    def span(self) -> float:
        """Seconds from the first request's arrival to the last one's (median)."""
        return statistics.median(self.spans) if self.spans else math.nan

    def aws(self, action: str) -> int:
        return self.counts.get(f"aws {action}", 0)

    @property
    def aws_calls(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("aws ") and k != "aws fetch")

    @property
    def vault_reads(self) -> int:
        return self.counts.get("vault read", 0)

    @property
    def mount_lookups(self) -> int:
        return self.counts.get("vault mount lookup", 0)


def pick(refs: list[Any], i: int) -> list[Any]:
    """The references of template ``i``: 20 of the 200, a different mix each,
    every secret used by some template."""
    n = len(refs)
    return [refs[(i * REFS_PER_TEMPLATE + j * 7) % n] for j in range(REFS_PER_TEMPLATE)]


def template_text(refs: list[Any]) -> tuple[str, str]:
    src = "".join(f"k{j} = {r.text}\n" for j, r in enumerate(refs))
    want = "".join(f"k{j} = {r.value}\n" for j, r in enumerate(refs))
    return src, want


def with_delay(b: Any, seconds: float, work: Callable[[], float]) -> float:
    b.aws.set_delay(seconds)
    b.vault.set_delay(seconds)
    try:
        return work()
    finally:
        b.aws.set_delay(b.delay)
        b.vault.set_delay(b.delay)


def counted(b: Any) -> Counter[str]:
    """The requests by kind (``aws Action``, ``vault read`` ...)."""
    counts = b.counts()
    return Counter({k: v for k, v in counts.items() if k.startswith(("aws ", "vault "))})


def span(b: Any) -> float:
    """First to last request arrival at either proxy, in seconds."""
    times = [r.time for proxy in (b.aws, b.vault) for r in proxy.log()]
    return max(times) - min(times) if times else math.nan


# -- 5a. the CLI tree ----------------------------------------------------------------


def bench_tree(b: Any, refs: list[Any], tmp: Path, runs: int) -> Case:
    src = tmp / "tree-src"
    src.mkdir()
    expected: dict[str, str] = {}
    for i in range(TEMPLATES):
        text, want = template_text(pick(refs, i))
        (src / f"t{i:03d}.conf.j2").write_text(text)
        expected[f"t{i:03d}.conf"] = want
    config = tmp / "tree.yaml"
    config.write_text(yaml.safe_dump(b.config(ttl=300)))
    case = Case("5a. CLI tree: 100 templates x 20 refs over 40 secrets")

    def once(n: int) -> float:
        out = tmp / f"tree-out-{n}-{time.monotonic_ns()}"
        start = time.perf_counter()
        cli.main(["render", str(src), "-o", str(out), "-c", str(config)], standalone_mode=False)
        wall = time.perf_counter() - start
        got = {p.name: p.read_text() for p in out.iterdir()}
        assert got == expected, "the tree rendered something else"
        return wall

    for n in range(runs):
        b.reset()
        case.walls.append(once(n))
        case.counts = counted(b)
        case.spans.append(span(b))
        case.walls_zero.append(with_delay(b, 0.0, lambda n=n: once(1000 + n)))  # type: ignore[misc]
    case.ideal = 3.0  # a mount lookup, then two rounds of reads at concurrency 16
    return case


# -- 5b. concurrent renders ------------------------------------------------------------


def distinct_templates(refs: list[Any], env: jinja2.Environment) -> list[tuple[Any, str]]:
    out = []
    for i in range(TEMPLATES):
        text, want = template_text(pick(refs, i))
        out.append((env.from_string(f"{{# template {i} #}}" + text), want))
    return out


def bench_async(b: Any, refs: list[Any], make_env: Callable[..., jinja2.Environment]) -> Case:
    resolver = Resolver.from_config(b.config(ttl=300))
    templates = distinct_templates(refs, make_env(resolver, enable_async=True))

    async def main() -> list[str]:
        return await asyncio.gather(*(t.render_async() for t, _ in templates))

    b.reset()
    start = time.perf_counter()
    outputs = asyncio.run(main())
    case = Case("5b. 100 concurrent render_async, distinct templates, cold")
    case.walls.append(time.perf_counter() - start)
    case.counts = counted(b)
    resolver.close()
    assert outputs == [want for _, want in templates], "an async render differed"
    return case


def bench_threads(b: Any, refs: list[Any], make_env: Callable[..., jinja2.Environment]) -> Case:
    resolver = Resolver.from_config(b.config(ttl=300))
    templates = distinct_templates(refs, make_env(resolver))[:THREADS]
    barrier = threading.Barrier(THREADS + 1)
    outputs: dict[int, str] = {}

    def worker(n: int) -> None:
        barrier.wait()
        outputs[n] = templates[n][0].render()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    b.reset()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    case = Case("5b. 16 threads, distinct templates, cold")
    case.walls.append(time.perf_counter() - start)
    case.counts = counted(b)
    resolver.close()
    assert [outputs[n] for n in range(THREADS)] == [w for _, w in templates], "a render differed"
    return case


# -- 5c. a large template -----------------------------------------------------------------


def seed_large(moto_url: str, bao_url: str, session: Any, secrets: int) -> None:
    sm = session.client("secretsmanager", endpoint_url=moto_url)
    root = hvac.Client(url=bao_url, token="root")
    for i in range(secrets):
        keys = {f"k{k}": f"aws-large-{i}-{k}" for k in range(LARGE_KEYS)}
        sm.create_secret(Name=f"large/s{i:04d}", SecretString=json.dumps(keys))
        keys = {f"k{k}": f"vault-large-{i}-{k}" for k in range(LARGE_KEYS)}
        root.secrets.kv.v2.create_or_update_secret(f"large/p{i:04d}", keys, mount_point="secret")


def bench_large(
    b: Any, make_env: Callable[..., jinja2.Environment], secrets: int, runs: int
) -> Case:
    lines, want = [], []
    for i in range(secrets):
        for k in range(LARGE_KEYS):
            lines.append(f"a{i}_{k} = <<aws|ap_sep_v1|large/s{i:04d}:k{k}>>")
            want.append(f"a{i}_{k} = aws-large-{i}-{k}")
            lines.append(f"v{i}_{k} = <<vault|ap_sep_v1|secret/data/large/p{i:04d}/k{k}>>")
            want.append(f"v{i}_{k} = vault-large-{i}-{k}")
    src, expected = "\n".join(lines), "\n".join(want)
    case = Case(f"5c. {len(lines):,} references over {2 * secrets:,} secrets, cold")

    def once() -> float:
        resolver = Resolver.from_config(b.config(ttl=300))
        template = make_env(resolver).from_string(src)  # compiled before the clock
        start = time.perf_counter()
        out = template.render()
        wall = time.perf_counter() - start
        resolver.close()
        assert out == expected, "the large template rendered something else"
        return wall

    for _ in range(runs):
        b.reset()
        case.walls.append(once())
        case.counts = counted(b)
        case.spans.append(span(b))
        case.walls_zero.append(with_delay(b, 0.0, once))
    aws_trips = math.ceil(math.ceil(secrets / 20) / CONCURRENCY)
    vault_trips = 1 + math.ceil(secrets / CONCURRENCY)
    case.ideal = max(aws_trips, vault_trips)
    case.note = f"ideal: AWS {aws_trips}, Vault {vault_trips}, side by side"
    return case


# -- 5d. start-up ------------------------------------------------------------------------


@dataclass
class Startup:
    baseline: float
    help: float
    render: float
    modules: list[str]


def best_of(argv: list[str], n: int, **kwargs: Any) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_startup(n: int) -> Startup:
    exe = Path(sys.executable).parent / "jinja-apsecrets"
    with tempfile.TemporaryDirectory(prefix="apsecrets-startup-") as tmp:
        folder = Path(tmp)
        (folder / "t.j2").write_text("a=<<env|ap_sep_v1|BENCH_VALUE>>\n")
        (folder / "apsecrets.yaml").write_text("connections:\n  env: {provider: env}\n")
        env = {**os.environ, "BENCH_VALUE": "x"}
        baseline = best_of([sys.executable, "-c", "import jinja2, yaml, click"], n)
        help_ = best_of([str(exe), "--help"], n)
        render = best_of([str(exe), "render", "t.j2"], n, cwd=folder, env=env)
        probe = (
            "import sys; from jinja_apsecrets.cli import main\n"
            "try: main(['render', 't.j2'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'botocore', 'hvac', 'requests', 'onepassword')), file=sys.stderr)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True
        )
        modules = eval(done.stderr.strip().splitlines()[-1])
    return Startup(baseline, help_, render, modules)


# -- report -------------------------------------------------------------------------------


def report(
    delay: float, tree: Case, conc: Case, threads: Case, large: Case, startup: Startup
) -> tuple[list[tuple[str, str, str, bool]], list[str]]:
    """Summary rows (measure, result, target, met) and the section's lines."""

    def trips(case: Case) -> float:
        return (case.wall - case.wall_zero) / delay if delay > 0 else math.nan

    rows = [
        (
            "5a. CLI tree: requests",
            f"AWS {tree.aws('BatchGetSecretValue')} BatchGetSecretValue + "
            f"{tree.aws('GetSecretValue')} GetSecretValue; Vault {tree.vault_reads} reads + "
            f"{tree.mount_lookups} mount lookup",
            "1 batch call; 20 reads + <= 1 mount lookup",
            tree.aws_calls == 1 and tree.vault_reads == 20 and tree.mount_lookups <= 1,
        ),
        (
            "5a. CLI tree: network share",
            f"{trips(tree):.1f} round trips",
            "<= 3.5 round trips",
            trips(tree) <= 3.5,
        ),
        (
            "5b. 100 concurrent render_async: AWS calls",
            str(conc.aws_calls),
            "<= 2",
            conc.aws_calls <= 2,
        ),
        ("5b. 16 threads: AWS calls", str(threads.aws_calls), "<= 2", threads.aws_calls <= 2),
        (
            "5c. large: round trips",
            f"{trips(large):.1f} (ideal {large.ideal:.0f}: {trips(large) / large.ideal:.2f}x)",
            "<= 1.1x ideal",
            trips(large) <= 1.1 * large.ideal,
        ),
        (
            "5d. start-up: --help / render of env refs",
            f"{startup.help / startup.baseline:.2f}x / {startup.render / startup.baseline:.2f}x",
            "<= 2x `import jinja2, yaml, click`",
            max(startup.help, startup.render) <= 2 * startup.baseline,
        ),
        (
            "5d. start-up: SDKs imported by an env render",
            ", ".join(startup.modules) or "none",
            "none",
            not startup.modules,
        ),
    ]

    def ms(s: float) -> str:
        return f"{s * 1e3:,.0f} ms"

    lines = [
        "## 5. Jobs: one round per job (issue 13)",
        "",
        "Rounds: claims on a batching connection (AWS) gather for 2 ms, and while a round of "
        "that connection is in flight the next one gathers (group commit); Vault reads go at "
        "once. Network share = wall time with the proxies' delay minus wall time with no "
        "delay (same work), in round trips, best run of each side. Request timeline = from "
        "the first request's arrival at a proxy to the last one's, plus the last one's round "
        "trip (median run): the network's part of the wall time, free of CPU noise.",
        "",
        "| case | wall | wall at 0 ms | network share | request timeline | AWS calls "
        "| Vault reads | mount lookups | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    known = ("aws BatchGetSecretValue", "aws GetSecretValue", "vault read", "vault mount lookup")
    for case in (tree, conc, threads, large):
        other = ", ".join(f"{v} {k}" for k, v in sorted(case.counts.items()) if k not in known)
        if other:
            case.note = "; ".join(filter(None, (case.note, f"also {other}")))
        share = f"{trips(case):.1f} round trips" if case.walls_zero else "-"
        zero = ms(case.wall_zero) if case.walls_zero else "-"
        timeline = f"{case.span / delay + 1:.1f} round trips" if case.spans and delay else "-"
        lines.append(
            f"| {case.label} | {ms(case.wall)} | {zero} | {share} | {timeline} | "
            f"{case.aws_calls} | {case.vault_reads} | {case.mount_lookups} | {case.note} |"
        )
    lines += [
        "",
        'Start-up, best of several fresh processes: `python -c "import jinja2, yaml, click"` '
        f"{ms(startup.baseline)}; `jinja-apsecrets --help` {ms(startup.help)}; "
        f"`jinja-apsecrets render t.j2` (env references only) {ms(startup.render)}. SDK "
        f"modules loaded by that render: {', '.join(startup.modules) or 'none'}.",
    ]
    return rows, lines

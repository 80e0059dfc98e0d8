"""Performance benchmarks (issue 6), measured side by side in one run.

Real local servers (moto_server for AWS Secrets Manager, ``bao server -dev``
for OpenBao KV v2) are started on free loopback ports, each behind a delay
proxy (``delay_proxy.py``, in a child process) that holds every HTTP request
for the delay (default 50 ms, a cross-region round trip) and counts it.

1. Cold render of a template with 200 references over 40 secrets (20 AWS
   secrets of 5 keys, 20 OpenBao paths of 5 keys): wall time and backend
   requests for (a) jinja_apsecrets (and (a'): the same with its SDK
   clients created before the clock starts), (b) one request per reference in
   sequence (boto3 ``get_secret_value`` / hvac ``read_secret_version``, the
   peers' way), (c) one request per secret in sequence.
2. Warm render of the same template against plain Jinja2 rendering it with
   the values written in (alternating, best round of each).
3. 16 threads rendering for 5 s with a 1 s TTL: secret fetches per key per
   TTL window.
4. 100 concurrent ``render_async`` calls on a cold cache: backend requests.
5. Job-sized rounds (``bench_jobs.py``): a CLI tree, concurrent renders of
   distinct templates, 10,000 references, start-up.

Results are printed and written to benchmarks/results/perf.md; ``--jobs-only``
runs section 5 alone and replaces only that section of the report.

    python benchmarks/bench_perf.py [--quick] [--delay-ms 50] [--jobs-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import hvac
import jinja2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_jobs
from bench_core import side_by_side
from delay_proxy import ProxyProcess

import jinja_apsecrets
from jinja_apsecrets import Resolver

RESULTS = Path(__file__).resolve().parent / "results" / "perf.md"
REGION = "us-east-1"
N_SECRETS = 20  # per backend
N_KEYS = 5
AWS_BATCH = 20  # ids per BatchGetSecretValue
VAR_EVERY = 10  # a Jinja variable every 10 lines, as config templates have
THREADS = 16
ASYNC_RENDERS = 100

# -- servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed: pip install -e '.[test]' installs it")
    return found


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM its process group (by PID), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def server(
    name: str,
    argv: list[str],
    port: int,
    ready: Callable[[str], bool],
    log: Path,
    env: Mapping[str, str],
) -> Iterator[Server]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group, stopped as one
        )
    srv = Server(name, proc, port)
    try:
        deadline = time.monotonic() + 60
        while not ready(srv.url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield srv
    finally:
        srv.stop()


def start_moto(stack: contextlib.ExitStack, tmp: Path) -> Server:
    port = free_port()
    argv = [find_binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return stack.enter_context(
        server(
            "moto_server", argv, port, lambda url: http_ok(url + "/moto-api/"), tmp / "moto.log", {}
        )
    )


def start_bao(stack: contextlib.ExitStack, tmp: Path) -> Server:
    port = free_port()
    home = tmp / "bao-home"  # the dev server writes ~/.vault-token
    home.mkdir()
    argv = [
        find_binary("bao"),
        "server",
        "-dev",
        "-dev-root-token-id=root",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    env = {"HOME": str(home), "VAULT_ADDR": "", "BAO_ADDR": ""}
    return stack.enter_context(server("bao", argv, port, bao_ready, tmp / "bao.log", env))


def bao_ready(url: str) -> bool:
    """Health answers and ``secret/`` (KV v2) takes writes: right after start
    the dev server may still be upgrading that mount."""
    if not http_ok(url + "/v1/sys/health"):
        return False
    try:
        client = hvac.Client(url=url, token="root", timeout=2)
        client.secrets.kv.v2.create_or_update_secret("__ready__", {"ok": "1"}, mount_point="secret")
    except (hvac.exceptions.VaultError, OSError):
        return False
    return True


# -- data and templates -------------------------------------------------------------


def aws_name(i: int) -> str:
    return f"bench/s{i:02d}"


def vault_path(i: int) -> str:
    return f"bench/p{i:02d}"


def value(kind: str, i: int, k: int) -> str:
    return f"{kind}-value-{i:02d}-{k}-Xq7z"


def seed(moto: Server, bao: Server) -> None:
    """20 AWS secrets and 20 KV v2 paths of 5 keys each, written directly (no proxy)."""
    sm = aws_session().client("secretsmanager", endpoint_url=moto.url)
    root = hvac.Client(url=bao.url, token="root")
    for i in range(N_SECRETS):
        keys = {f"k{k}": value("aws", i, k) for k in range(N_KEYS)}
        sm.create_secret(Name=aws_name(i), SecretString=json.dumps(keys))
        keys = {f"k{k}": value("vault", i, k) for k in range(N_KEYS)}
        root.secrets.kv.v2.create_or_update_secret(vault_path(i), keys, mount_point="secret")


@dataclass(frozen=True)
class Ref:
    connection: str
    path: str
    value: str

    @property
    def text(self) -> str:
        return f"<<{self.connection}|ap_sep_v1|{self.path}>>"


def references() -> list[Ref]:
    """200 references over 40 secrets: every key of every secret once."""
    refs = []
    for i in range(N_SECRETS):
        for k in range(N_KEYS):
            refs.append(Ref("aws", f"{aws_name(i)}:k{k}", value("aws", i, k)))
            refs.append(Ref("vault", f"secret/data/{vault_path(i)}/k{k}", value("vault", i, k)))
    return refs


def templates(refs: list[Ref], var_every: int) -> tuple[str, str, str]:
    """The template with references, the same with the values written in, and
    the same with ``{{ v[i] }}`` for the values (how the sequential peers render)."""
    src, written, slots = [], [], []
    for i, ref in enumerate(refs):
        name = ref.path.replace("/", "_").replace(":", "_").replace("secret_data_", "")
        src.append(f"{name} = {ref.text}")
        written.append(f"{name} = {ref.value}")
        slots.append(f"{name} = {{{{ v[{i}] }}}}")
        if var_every and i % var_every == 0:
            for out in (src, written, slots):
                out.append("host = {{ host }}")
    return tuple("\n".join(lines) + "\n" for lines in (src, written, slots))  # type: ignore[return-value]


# -- request counting ---------------------------------------------------------------


def classify_aws(method: str, target: str, headers: Mapping[str, str], body: bytes) -> list[str]:
    action = headers.get("x-amz-target", "").rpartition(".")[2] or f"{method} {target}"
    labels = [f"aws {action}"]
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return labels
    ids = payload.get("SecretIdList") or ([payload["SecretId"]] if "SecretId" in payload else [])
    labels += [f"fetch aws:{sid}" for sid in ids]
    return labels


def classify_vault(method: str, target: str, headers: Mapping[str, str], body: bytes) -> list[str]:
    path = target.split("?", 1)[0]
    if path.startswith("/v1/secret/data/"):
        return ["vault read", f"fetch vault:{path[len('/v1/secret/data/') :]}"]
    if path.startswith("/v1/auth/token/lookup-self"):
        return ["vault token lookup"]
    if path.startswith(("/v1/sys/internal/ui/mounts", "/v1/sys/mounts")):
        return ["vault mount lookup"]
    return [f"vault other {method} {path}"]


@dataclass
class Backends:
    aws: ProxyProcess
    vault: ProxyProcess
    delay: float

    def reset(self) -> None:
        self.aws.reset()
        self.vault.reset()

    def counts(self) -> Counter[str]:
        return self.aws.counts() + self.vault.counts()

    def config(self, ttl: float) -> dict[str, Any]:
        return {
            "cache": {"ttl": ttl},
            "connections": {
                "aws": {
                    "provider": "aws",
                    "region": REGION,
                    "endpointUrl": self.aws.url,
                    "accessKeyId": "bench",
                    "secretAccessKey": "bench",
                },
                "vault": {"provider": "hashicorp", "url": self.vault.url, "token": "root"},
            },
        }


def aws_session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION
    )


def make_env(resolver: Resolver | None, **options: Any) -> jinja2.Environment:
    extensions = ["jinja_apsecrets.SecretsExtension"] if resolver is not None else []
    env = jinja2.Environment(extensions=extensions, keep_trailing_newline=True, **options)
    if resolver is not None:
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    return env


# -- 1. cold render -----------------------------------------------------------------


@dataclass
class Run:
    """One cold run: wall time, compile time (ours only), and when the first
    request reached each backend and the last one left (s after the start)."""

    wall: float
    start: float  # time.monotonic() when the clock started
    compile: float = 0.0
    aws: tuple[float, float] = (math.nan, math.nan)
    vault: tuple[float, float] = (math.nan, math.nan)


@dataclass
class Cold:
    label: str
    runs: list[Run]
    aws: Counter[str]
    vault: Counter[str]
    connections: int

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def median_run(self) -> Run:
        return sorted(self.runs, key=lambda r: r.wall)[len(self.runs) // 2]


def run_library(b: Backends, src: str, expected: str, prepared: bool) -> Run:
    """(a): a fresh resolver (cold cache), compile and render. ``prepared``:
    its SDK clients are created (offline) before the clock starts."""
    start = time.monotonic()
    resolver = Resolver.from_config(b.config(ttl=300))
    if prepared:
        for provider in resolver.connections.values():
            _ = provider.client  # type: ignore[attr-defined]  # boto3 / hvac objects, no request
        start = time.monotonic()
    template = make_env(resolver).from_string(src)
    compiled = time.monotonic()
    out = template.render(host="db.internal")
    wall = time.monotonic() - start
    resolver.close()
    assert out == expected, "jinja_apsecrets rendered something else"
    return Run(wall, start, compiled - start)


def run_sequential(b: Backends, refs: list[Ref], slots: str, expected: str, per: str) -> Run:
    """(b) per="reference": one request per reference, in template order;
    (c) per="secret": one request per distinct secret, in order. Plain SDK
    calls through the same proxies, then plain Jinja2 renders the values."""
    start = time.monotonic()
    sm = aws_session().client("secretsmanager", endpoint_url=b.aws.url)
    vault = hvac.Client(url=b.vault.url, token="root")
    documents: dict[tuple[str, str], Mapping[str, Any]] = {}
    values = []
    for ref in refs:
        if ref.connection == "aws":
            secret, _, key = ref.path.partition(":")
        else:
            secret, _, key = ref.path[len("secret/data/") :].rpartition("/")
        doc = documents.get((ref.connection, secret)) if per == "secret" else None
        if doc is None:
            if ref.connection == "aws":
                doc = json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])
            else:
                response = vault.secrets.kv.v2.read_secret_version(
                    path=secret, mount_point="secret", raise_on_deleted_version=True
                )
                doc = response["data"]["data"]
            documents[(ref.connection, secret)] = doc
        values.append(doc[key])
    out = jinja2.Environment(keep_trailing_newline=True).from_string(slots)
    text = out.render(v=values, host="db.internal")
    wall = time.monotonic() - start
    sm.close()
    vault.adapter.close()
    assert text == expected, f"one request per {per} rendered something else"
    return Run(wall, start)


def span(proxy: ProxyProcess, start: float) -> tuple[float, float]:
    """When, after ``start``, the first and the last request reached ``proxy``."""
    times = [r.time - start for r in proxy.log()]
    return (min(times), max(times)) if times else (math.nan, math.nan)


def bench_cold(b: Backends, refs: list[Ref], quick: bool) -> dict[str, Cold]:
    src, expected, slots = templates(refs, VAR_EVERY)
    expected = (
        jinja2.Environment(keep_trailing_newline=True)
        .from_string(expected)
        .render(host="db.internal")
    )
    runs: dict[str, Callable[[], Run]] = {
        "a": lambda: run_library(b, src, expected, prepared=False),
        "a2": lambda: run_library(b, src, expected, prepared=True),
        "b": lambda: run_sequential(b, refs, slots, expected, "reference"),
        "c": lambda: run_sequential(b, refs, slots, expected, "secret"),
    }
    labels = {
        "a": "(a) jinja_apsecrets",
        "a2": "(a') jinja_apsecrets, SDK clients created before the clock starts",
        "b": "(b) one request per reference, in sequence",
        "c": "(c) one request per secret, in sequence",
    }
    rounds = {"a": 3, "a2": 3, "b": 1, "c": 1} if quick else {"a": 9, "a2": 9, "b": 3, "c": 5}
    results: dict[str, Cold] = {}
    for i in range(max(rounds.values())):
        for key, fn in runs.items():
            if i >= rounds[key]:
                continue
            b.reset()
            run = fn()
            run.aws, run.vault = span(b.aws, run.start), span(b.vault, run.start)
            cold = results.setdefault(key, Cold(labels[key], [], Counter(), Counter(), 0))
            cold.runs.append(run)
            aws, vault = b.aws.counts(), b.vault.counts()
            if i and (aws, vault) != (cold.aws, cold.vault):
                print(f"note: {labels[key]}: request counts differ between rounds", file=sys.stderr)
            cold.aws, cold.vault = aws, vault
            cold.connections = b.aws.connections + b.vault.connections
            print(f"  cold {labels[key]}: {run.wall * 1e3:.0f} ms", file=sys.stderr)
    return results


# -- 2. warm render -----------------------------------------------------------------


@dataclass
class Warm:
    label: str
    ours: float
    plain: float
    requests: int
    rounds: int
    number: int

    @property
    def ratio(self) -> float:
        return self.ours / self.plain


def bench_warm(b: Backends, refs: list[Ref], quick: bool) -> list[Warm]:
    rounds, number = (3, 200) if quick else (15, 2000)
    rows = []
    resolver = Resolver.from_config(b.config(ttl=300))
    try:
        env, plain = make_env(resolver), make_env(None)
        for label, every in (
            ("the benchmark template (a variable every 10 lines)", VAR_EVERY),
            ("its 200 references without the variables", 0),
        ):
            src, written, _ = templates(refs, every)
            ours, theirs = env.from_string(src), plain.from_string(written)
            assert ours.render(host="h") == theirs.render(host="h")  # warms the cache
            b.reset()
            t_ours, t_plain = side_by_side(
                lambda o=ours: o.render(host="h"),  # type: ignore[misc]
                lambda t=theirs: t.render(host="h"),  # type: ignore[misc]
                number,
                rounds,
            )
            requests = b.aws.requests + b.vault.requests
            rows.append(Warm(label, t_ours, t_plain, requests, rounds, number))
    finally:
        resolver.close()
    return rows


# -- 3. threads and a short TTL -------------------------------------------------------


@dataclass
class Threaded:
    elapsed: float
    ttl: float
    renders: int
    fetches: dict[str, list[float]]  # per secret: arrival times at the proxy
    counts: Counter[str]
    errors: list[str]

    @property
    def windows(self) -> float:
        return self.elapsed / self.ttl

    def per_key_per_window(self) -> tuple[float, float]:
        n = [len(times) for times in self.fetches.values()]
        return statistics.mean(n) / self.windows, max(n) / self.windows

    def min_gap(self) -> float:
        gaps = [
            later - earlier
            for times in self.fetches.values()
            for earlier, later in itertools.pairwise(times)
        ]
        return min(gaps) if gaps else math.inf


def bench_threads(b: Backends, refs: list[Ref], duration: float, ttl: float = 1.0) -> Threaded:
    src, expected, _ = templates(refs, VAR_EVERY)
    expected = jinja2.Environment(keep_trailing_newline=True).from_string(expected).render(host="h")
    resolver = Resolver.from_config(b.config(ttl=ttl))
    template = make_env(resolver).from_string(src)
    renders = [0] * THREADS
    errors: list[str] = []
    barrier = threading.Barrier(THREADS + 1)
    stop = threading.Event()

    def worker(n: int) -> None:
        barrier.wait()
        while not stop.is_set():
            try:
                out = template.render(host="h")
            except Exception as exc:  # reported, not fatal
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if out != expected:
                errors.append("wrong output")
            renders[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    b.reset()
    start = time.monotonic()
    try:
        barrier.wait()
        start = time.monotonic()
        time.sleep(duration)
    finally:
        stop.set()
        elapsed = time.monotonic() - start
        for t in threads:
            t.join()
        resolver.close()
    fetches: dict[str, list[float]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for proxy in (b.aws, b.vault):
        for request in proxy.log():
            if request.time > start + elapsed:
                continue  # arrived after the window (a render that was finishing)
            counts.update(request.labels)
            for label in request.labels:
                if label.startswith("fetch "):
                    fetches[label[len("fetch ") :]].append(request.time)
    return Threaded(elapsed, ttl, sum(renders), dict(fetches), counts, errors[:5])


# -- 4. concurrent async renders ------------------------------------------------------


@dataclass
class Async:
    wall: float
    counts: Counter[str]
    connections: int


def bench_async(b: Backends, refs: list[Ref]) -> Async:
    src, expected, _ = templates(refs, VAR_EVERY)
    expected = jinja2.Environment(keep_trailing_newline=True).from_string(expected).render(host="h")
    resolver = Resolver.from_config(b.config(ttl=300))
    template = make_env(resolver, enable_async=True).from_string(src)

    async def main() -> list[str]:
        return await asyncio.gather(
            *(template.render_async(host="h") for _ in range(ASYNC_RENDERS))
        )

    b.reset()
    start = time.perf_counter()
    outputs = asyncio.run(main())
    wall = time.perf_counter() - start
    resolver.close()
    assert all(out == expected for out in outputs), "an async render differed"
    return Async(wall, b.counts(), b.aws.connections + b.vault.connections)


# -- report -------------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def revision() -> str:
    """The library's git revision, if it runs from a checkout."""
    root = Path(jinja_apsecrets.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "jinja_apsecrets"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (git {head}{', with uncommitted changes' if dirty else ''})"


def machine() -> str:
    bao = subprocess.run(
        [find_binary("bao"), "version"], capture_output=True, text=True, check=False
    ).stdout.split()
    libs = {
        "jinja_apsecrets": jinja_apsecrets.__version__ + revision(),
        "Jinja2": jinja2.__version__,
        "boto3": version("boto3"),
        "botocore": version("botocore"),
        "hvac": version("hvac"),
        "requests": version("requests"),
        "moto": version("moto"),
        "OpenBao": bao[1] if len(bao) > 1 else "?",
    }
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in libs.items())
    )


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def breakdown(counts: Counter[str], prefix: str) -> str:
    items = sorted((k, v) for k, v in counts.items() if k.startswith(prefix))
    return ", ".join(f"{v} {k[len(prefix) :].strip()}" for k, v in items) or "none"


def total(counts: Counter[str], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def report(
    args: argparse.Namespace,
    cold: dict[str, Cold],
    warm: list[Warm],
    threaded: Threaded,
    steady: Threaded,
    conc: Async,
    jobs: tuple[list[tuple[str, str, str, bool]], list[str]] | None = None,
) -> str:
    delay = args.delay_ms / 1000

    def trips(seconds: float) -> str:
        return f"{seconds / delay:.1f}" if delay > 0 else "-"

    a, b_ = cold["a"], cold["b"]
    aws_batches = a.aws["aws BatchGetSecretValue"]
    aws_total, vault_total = total(a.aws, "aws "), total(a.vault, "vault ")
    wanted_batches = math.ceil(N_SECRETS / AWS_BATCH)
    mean_pkw, max_pkw = threaded.per_key_per_window()
    async_fetches = total(conc.counts, "fetch ")
    async_secrets = len([k for k in conc.counts if k.startswith("fetch ")])
    async_requests = total(conc.counts, "aws ") + total(conc.counts, "vault ")
    main_warm = warm[0]
    summary = [
        ("1. cold render (a): wall time", f"{trips(a.wall)} round trips ({ms(a.wall)})", "<= 5 round trips", a.wall <= 5 * delay),
        ("1. cold render: (b) / (a)", f"{b_.wall / a.wall:.1f}x", ">= 20x", b_.wall >= 20 * a.wall),
        ("1. cold render (a): AWS requests", f"{aws_total} ({aws_batches} BatchGetSecretValue)", f"{wanted_batches} batch call", aws_total == wanted_batches == aws_batches),
        ("2. warm render / plain Jinja2", f"{main_warm.ratio:.2f}x", "<= 1.2x", main_warm.ratio <= 1.2),
        (f"3. {THREADS} threads, TTL 1 s: fetches per key per TTL window", f"{mean_pkw:.2f} mean, {max_pkw:.2f} max", "1", max_pkw <= 1.0 and threaded.min_gap() >= threaded.ttl and not threaded.errors),
        (f"4. {ASYNC_RENDERS} concurrent render_async: fetches per secret", f"{async_fetches / max(1, async_secrets):.2f} ({async_fetches} fetches, {async_secrets} secrets)", "1", async_fetches == async_secrets == 2 * N_SECRETS),
    ]  # fmt: skip
    command = "python benchmarks/bench_perf.py" + (" --quick" if args.quick else "")
    if args.delay_ms != 50:
        command += f" --delay-ms {args.delay_ms:g}"
    out = [
        "# Performance benchmark results",
        "",
        f"Machine: {machine()}.",
        "",
        f"Run: {'quick (smoke)' if args.quick else 'full'} run of `{command}` on "
        f"{datetime.date.today().isoformat()}. Backends: moto_server (AWS Secrets Manager) and "
        "`bao server -dev` (OpenBao, KV v2) on 127.0.0.1, each behind a loopback proxy (its own "
        f"process) that holds every HTTP request {args.delay_ms:g} ms: one round trip. Template: "
        "200 references over 40 secrets (20 AWS secrets and 20 KV v2 paths of 5 keys each, "
        "every key referenced once), with a `{{ host }}` line every 10 lines.",
        "",
        "## Summary",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
    ]
    if jobs is not None:
        summary += jobs[0]
    out += [f"| {m} | {r} | {t} | {mark(ok)} |" for m, r, t, ok in summary]
    out += [
        "",
        "## 1. Cold render",
        "",
        "Each run starts from nothing: a new resolver (or new SDK clients), compile, fetch, "
        "render; (a') creates the resolver's SDK clients (boto3, hvac: no request) before its "
        "clock starts. Wall times are medians of "
        + " / ".join(str(len(x.runs)) for x in cold.values())
        + " runs; requests and connections are counted at the proxies.",
        "",
        "| approach | wall time | round trips | AWS requests | Vault requests | TCP connections | / (a) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for x in cold.values():
        out.append(
            f"| {x.label} | {ms(x.wall)} | {trips(x.wall)} | {total(x.aws, 'aws ')} | "
            f"{total(x.vault, 'vault ')} | {x.connections} | {x.wall / a.wall:.2f}x |"
        )
    timeline = []
    for x in (a, cold["a2"]):
        m = x.median_run
        timeline.append(
            f"{x.label.split(' ', 1)[0]}: compile {ms(m.compile)}; AWS batch reached the proxy at "
            f"{ms(m.aws[0])}; Vault requests from {ms(m.vault[0])} to {ms(m.vault[1])}; "
            f"done at {ms(m.wall)}"
        )
    out += [
        "",
        f"Requests of (a): AWS {breakdown(a.aws, 'aws ')}; Vault {breakdown(a.vault, 'vault ')}: "
        f"{aws_total + vault_total} requests for 40 secrets. Vault has no batch read: its 20 "
        "reads run concurrently, at most `concurrency` (default 16) at a time per connection, "
        "after the mount lookup (one round trip, then cached).",
        "",
        "Timeline of the median run (time after the clock started): " + "; ".join(timeline) + ".",
        "",
        "## 2. Warm render",
        "",
        "The compiled template rendered again with every secret cached, against plain Jinja2 "
        "rendering the same text with the values written in. Sides alternate; best of "
        f"{main_warm.rounds} rounds of {main_warm.number} renders.",
        "",
        "| template | jinja_apsecrets | plain Jinja2 | ratio | target | backend requests |",
        "|---|---|---|---|---|---|",
    ]
    for w in warm:
        out.append(
            f"| {w.label} | {us(w.ours)} | {us(w.plain)} | {w.ratio:.2f}x | <= 1.2x | {w.requests} |"
        )
    gap = threaded.min_gap()
    out += [
        "",
        f"## 3. {THREADS} threads for {threaded.elapsed:.1f} s, TTL {threaded.ttl:g} s",
        "",
        f"{THREADS} threads render the template in a loop on one resolver with `cache: {{ttl: "
        f"{threaded.ttl:g}}}`, starting cold. A fetch is one secret read by a backend (one id of "
        "a BatchGetSecretValue, or one KV read), counted at the proxies; TTL windows = elapsed "
        "time / TTL. A key is fetched again only after its entry expired, and the fetch itself "
        "takes a round trip or more, so the count stays a little under 1; the exact check is the "
        "shortest time between two fetches of one key, which must not be under the TTL.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| renders | {threaded.renders:,} ({threaded.renders / threaded.elapsed:,.0f}/s; "
        f"{steady.renders / steady.elapsed:,.0f}/s with `ttl: {steady.ttl:g}`, nothing expiring) |",
        f"| TTL windows elapsed | {threaded.windows:.2f} |",
        f"| distinct secrets fetched | {len(threaded.fetches)} |",
        f"| fetches per key per TTL window | {mean_pkw:.2f} mean, {max_pkw:.2f} max (target 1) |",
        f"| shortest time between two fetches of one key | {gap:.2f} s (TTL {threaded.ttl:g} s) |",
        f"| backend requests | AWS {breakdown(threaded.counts, 'aws ')}; "
        f"Vault {breakdown(threaded.counts, 'vault ')} |",
        f"| render errors | {len(threaded.errors)}"
        f"{': ' + '; '.join(threaded.errors) if threaded.errors else ''} |",
        "",
        "An AWS GetSecretValue call here is a refresh of one secret alone: its entry expired "
        "apart from the others', so it was fetched by itself instead of in a batch.",
        "",
        f"## 4. {ASYNC_RENDERS} concurrent `render_async` calls, cold cache",
        "",
        f"`asyncio.gather` of {ASYNC_RENDERS} `render_async` calls of the template, compiled "
        "beforehand, on an `Environment(enable_async=True)` with a fresh resolver.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| wall time | {ms(conc.wall)} ({trips(conc.wall)} round trips) |",
        f"| secret fetches | {async_fetches} for {async_secrets} distinct secrets "
        "(target: one each) |",
        f"| backend requests | {async_requests}: AWS {breakdown(conc.counts, 'aws ')}; "
        f"Vault {breakdown(conc.counts, 'vault ')} |",
        f"| TCP connections | {conc.connections} |",
        "",
        "Counted: every HTTP request that reached a backend. Besides one fetch per secret (AWS: "
        "20 in one BatchGetSecretValue), the Vault connection looks its mount up once "
        "(`sys/internal/ui/mounts/...`: which mount, which KV version); that is then cached.",
    ]
    if jobs is not None:
        out += ["", *jobs[1]]
    return "\n".join(out) + "\n"


def run_jobs(
    args: argparse.Namespace, backends: Backends, moto: Server, bao: Server, tmp: Path
) -> tuple[list[tuple[str, str, str, bool]], list[str]]:
    """Section 5 (see ``bench_jobs.py``)."""
    refs = references()
    runs = 1 if args.quick else 5
    secrets = 100 if args.quick else bench_jobs.LARGE_SECRETS
    print("5. jobs: seeding the large case ...", file=sys.stderr)
    bench_jobs.seed_large(moto.url, bao.url, aws_session(), secrets)
    print("5a. tree ...", file=sys.stderr)
    tree = bench_jobs.bench_tree(backends, refs, tmp, runs)
    print("5b. concurrent ...", file=sys.stderr)
    conc = bench_jobs.bench_async(backends, refs, make_env)
    threads = bench_jobs.bench_threads(backends, refs, make_env)
    print("5c. large ...", file=sys.stderr)
    large = bench_jobs.bench_large(backends, make_env, secrets, runs)
    print("5d. start-up ...", file=sys.stderr)
    startup = bench_jobs.bench_startup(3 if args.quick else 9)
    return bench_jobs.report(backends.delay, tree, conc, threads, large, startup)


def replace_jobs_section(
    path: Path, jobs: tuple[list[tuple[str, str, str, bool]], list[str]]
) -> str:
    """The report at ``path`` with section 5 (and its summary rows) replaced."""
    old = path.read_text() if path.exists() else "# Performance benchmark results\n"
    head = old.split("\n## 5. Jobs", 1)[0].rstrip("\n")
    lines = head.split("\n")
    lines = [line for line in lines if not line.startswith("| 5")]
    rows = [f"| {m} | {r} | {t} | {mark(ok)} |" for m, r, t, ok in jobs[0]]
    # After the summary table: before the blank line that precedes section 1.
    at = next((i - 1 for i, line in enumerate(lines) if line.startswith("## 1.")), len(lines))
    lines[at:at] = rows
    return "\n".join(lines) + "\n\n" + "\n".join(jobs[1]) + "\n"


# -- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="delay per backend request")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the report")
    parser.add_argument(
        "--jobs-only", action="store_true", help="run section 5 only; replace it in the report"
    )
    args = parser.parse_args()
    delay = args.delay_ms / 1000

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind: servers and proxies are stopped

    signal.signal(signal.SIGTERM, terminate)
    refs = references()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="apsecrets-bench-")))
        print("starting moto_server and bao ...", file=sys.stderr)
        moto, bao = start_moto(stack, tmp), start_bao(stack, tmp)
        seed(moto, bao)
        # The proxies run in child processes: their CPU time is not the library's.
        aws = stack.enter_context(
            ProxyProcess("127.0.0.1", moto.port, delay, name="aws", classify=classify_aws)
        )
        vault = stack.enter_context(
            ProxyProcess("127.0.0.1", bao.port, delay, name="vault", classify=classify_vault)
        )
        backends = Backends(aws, vault, delay)
        if args.jobs_only:
            jobs = run_jobs(args, backends, moto, bao, tmp)
            text = replace_jobs_section(args.output, jobs)
            print(text)
            args.output.write_text(text)
            return 0
        print("1. cold render ...", file=sys.stderr)
        cold = bench_cold(backends, refs, args.quick)
        print("2. warm render ...", file=sys.stderr)
        warm = bench_warm(backends, refs, args.quick)
        print("3. threads ...", file=sys.stderr)
        duration = 2.0 if args.quick else 5.0
        threaded = bench_threads(backends, refs, duration, ttl=1.0)
        steady = bench_threads(backends, refs, duration, ttl=300.0)  # no expiry: the baseline
        print("4. async ...", file=sys.stderr)
        conc = bench_async(backends, refs)
        jobs = run_jobs(args, backends, moto, bao, tmp)
    text = report(args, cold, warm, threaded, steady, conc, jobs)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

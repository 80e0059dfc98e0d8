"""Masking throughput of ``run`` (issue 14): what the streaming masker costs.

The child's output passes through :class:`~jinja_apsecrets.masking.StreamMasker`
in pipe-sized reads (64 KiB). Measured on log-like text with a few values in
it, with 20 values to mask (one a 2 KiB PEM key, whose lines are masked too),
against masking the whole text at once and against no masking (a copy).
Results go to benchmarks/results/masking.md.

    python benchmarks/bench_masking.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jinja_apsecrets.masking import StreamMasker, mask

RESULTS = Path(__file__).parent / "results" / "masking.md"
READ = 65536


def values() -> list[str]:
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = "\n".join("".join(rng.choice(alphabet) for _ in range(64)) for _ in range(32))
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    return [pem] + [f"secret-value-{i}-{rng.random():.8f}" for i in range(19)]


def log_text(size: int, secrets: list[str]) -> bytes:
    rng = random.Random(11)
    lines = []
    total = 0
    while total < size:
        if rng.random() < 0.01:
            line = f"INFO token={rng.choice(secrets[1:])} user=app\n"
        else:
            line = f"INFO request id={rng.getrandbits(64):x} path=/api/v1/items status=200\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def best(func: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def streamed(data: bytes, secrets: list[str]) -> bytes:
    masker = StreamMasker(secrets)
    out = [masker.feed(data[i : i + READ]) for i in range(0, len(data), READ)]
    out.append(masker.flush())
    return b"".join(out)


def copied(data: bytes) -> bytes:
    return b"".join(data[i : i + READ] for i in range(0, len(data), READ))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = 4 << 20 if args.quick else 32 << 20
    rounds = 3 if args.quick else 5
    secrets = values()
    data = log_text(size, secrets)
    assert streamed(data, secrets) == mask(data, secrets)
    mib = len(data) / (1 << 20)
    rows = [
        ("copy in 64 KiB reads (no masking)", best(lambda: copied(data), rounds)),
        ("mask the whole text at once", best(lambda: mask(data, secrets), rounds)),
        ("StreamMasker, 64 KiB reads", best(lambda: streamed(data, secrets), rounds)),
    ]
    lines = [
        "# Masking throughput (`run`)",
        "",
        f"{mib:.0f} MiB of log lines, 1% holding one of 20 values (one a 2 KiB PEM key);"
        f" best of {rounds} rounds. Python {platform.python_version()}, {platform.machine()}.",
        "",
        "| what | seconds | MiB/s |",
        "|---|---|---|",
        *(f"| {name} | {secs:.3f} | {mib / secs:.0f} |" for name, secs in rows),
        "",
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

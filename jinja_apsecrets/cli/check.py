"""``check``: test connections live (the spec's "Test connection")."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from ..config import find_config
from ..errors import SecretsError
from ._audit import Reporter
from ._errors import EXIT_CODES_HELP, UsageProblem, exit_code
from ._options import guarded, plain_config_option, session, verbose_option, worst

__all__ = ["check"]


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("names", nargs=-1)
@plain_config_option
@verbose_option
@guarded
def check(names: Sequence[str], config: Path | None, verbose: int) -> None:
    """Test connections live (the spec's "Test connection"): all, or NAMES.

    One line each: OK, or the error code and message with the provider's
    troubleshooting hints. Exits 3 if any connection fails.
    """
    reporter = Reporter(verbose)
    with session(config, None, reporter) as resolver:
        known = list(resolver.connections)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageProblem(
                f"unknown connection {', '.join(unknown)}; configured: {', '.join(known) or 'none'}"
            )
        wanted = list(dict.fromkeys(names)) or known
        if not wanted:
            raise UsageProblem(f"{find_config(config)}: no connections are configured")

        def run(name: str) -> tuple[SecretsError | None, float]:
            start = time.monotonic()
            try:
                resolver.check(name)
            except SecretsError as exc:
                return exc, time.monotonic() - start
            return None, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            results = list(pool.map(run, wanted))
        codes: set[int] = set()
        for name, (error, took) in zip(wanted, results, strict=True):
            provider = resolver.connections[name]
            label = f"{name} ({provider.id})"
            if error is None:
                click.echo(f"{label}: OK ({took:.2f}s)")
                continue
            codes.add(exit_code(error))
            click.echo(f"{label}: {error.code}: {error.message} ({took:.2f}s)")
            # The error's own hint when it adds to the provider's troubleshooting.
            general = provider.troubleshooting
            own = [error.hint] if error.hint and error.hint not in "; ".join(general) else []
            for hint in dict.fromkeys([*own, *general]):
                click.echo(f"  hint: {hint}")
    if worst(codes):
        raise click.exceptions.Exit(worst(codes))

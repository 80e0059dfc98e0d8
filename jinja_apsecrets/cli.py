"""The ``jinja-apsecrets`` command.

Exit codes: 0 ok; 1 render failure (a missing secret, an invalid reference, a
template error); 2 usage or configuration error; 3 a backend cannot be reached.
Errors print their code, ``template:line`` and a hint, never a value. Output
files are written atomically with mode 0600, or not at all.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
import jinja2
import yaml

from . import __version__
from .config import find_config
from .errors import SecretConnectionError, SecretsError, SecretValidationError
from .resolver import ON_MISSING, Resolver

__all__ = ["main", "write_atomic"]

EXIT_OK, EXIT_RENDER, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3


def _exit_code(error: BaseException) -> int:
    if isinstance(error, SecretConnectionError):
        return EXIT_CONNECTION
    if isinstance(error, SecretValidationError) and error.lineno is None:
        return EXIT_USAGE  # configuration, not a template
    return EXIT_RENDER


def _fail(error: BaseException) -> NoReturn:
    """Print ``error`` for a person and exit with its code."""
    if isinstance(error, SecretsError):
        where = f" ({error.location})" if error.location else ""
        ref = ""
        if error.provider and error.path:
            ref = f" [{error.provider}|{error.path}]"
        click.echo(f"error: {error.code}: {error.message}{ref}{where}", err=True)
        hint = error.hint or _HINTS.get(error.code)
        if hint:
            click.echo(f"hint: {hint}", err=True)
    elif isinstance(error, jinja2.TemplateSyntaxError):
        where = f"{error.filename or error.name or '<template>'}:{error.lineno}"
        click.echo(f"error: template syntax: {error.message} ({where})", err=True)
    elif isinstance(error, jinja2.TemplateNotFound):
        click.echo(f"error: template not found: {error.name}", err=True)
        sys.exit(EXIT_USAGE)
    else:
        click.echo(f"error: {type(error).__name__}: {error}", err=True)
    sys.exit(_exit_code(error))


_HINTS = {
    "VALIDATION": "check the reference format (aws: secretName:jsonKey, "
    "hashicorp: mount/data/path/key, onepassword: op://vault/item/field)",
    "SECRET_MANAGER_GET_SECRET_FAILED": "check that the secret exists and the path is right",
    "SECRET_MANAGER_CONNECTION_FAILED": "check credentials and network access to the backend",
}


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file, then a rename."""
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_resolver(config: str | None) -> Resolver:
    """The resolver for ``-c`` / ``$APSECRETS_CONFIG`` / ``./apsecrets.yaml``."""
    path = find_config(config)
    if path is None:
        raise SecretValidationError(
            "no configuration: pass -c CONFIG, set APSECRETS_CONFIG or create ./apsecrets.yaml"
        )
    return Resolver.from_config(path)


def load_vars(path: str | None) -> dict[str, Any]:
    """Template variables from a YAML or JSON file (a mapping)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except OSError as exc:
        raise SecretValidationError(f"{path}: cannot read vars file: {exc.strerror}") from None
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SecretValidationError(f"{path}: cannot parse vars file{line}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SecretValidationError(f"{path}: vars file must hold a mapping of names to values")
    return dict(data)


def make_environment(
    template: Path, resolver: Resolver, on_missing: str | None
) -> jinja2.Environment:
    """The CLI's environment: templates beside ``template``, strict undefined,
    trailing newlines kept (config files need them)."""
    env = jinja2.Environment(  # noqa: S701 - config files, not HTML
        loader=jinja2.FileSystemLoader(str(template.parent)),
        extensions=["jinja_apsecrets.SecretsExtension"],
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.install_secret_resolver(resolver, on_missing=on_missing)  # type: ignore[attr-defined]
    return env


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jinja-apsecrets")
def main() -> None:
    """Render Jinja2 templates whose secrets live in secret managers.

    \b
    Exit codes:
      0  success
      1  render failure: a missing secret, an invalid reference, a template error
      2  usage or configuration error
      3  a secret manager cannot be reached
    """


@main.command()
@click.argument("template", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (atomically, mode 0600) instead of stdout.",
)
@click.option(
    "-c", "--config", help="Config file (default: $APSECRETS_CONFIG, then ./apsecrets.yaml)."
)
@click.option(
    "--vars",
    "vars_file",
    help="YAML or JSON file of template variables; references in it are resolved.",
)
@click.option(
    "--on-missing",
    type=click.Choice(ON_MISSING),
    default=None,
    help="What a missing secret prints (default: error).",
)
def render(
    template: Path,
    output: Path | None,
    config: str | None,
    vars_file: str | None,
    on_missing: str | None,
) -> None:
    """Render TEMPLATE with its secrets to OUTPUT or stdout.

    Nothing is written unless the whole template renders.
    """
    try:
        resolver = load_resolver(config)
        with resolver:
            variables = resolver.resolve(load_vars(vars_file))
            env = make_environment(template, resolver, on_missing)
            text = env.get_template(template.name).render(variables)
    except (SecretsError, jinja2.TemplateError) as exc:
        _fail(exc)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)


if __name__ == "__main__":  # pragma: no cover
    main()

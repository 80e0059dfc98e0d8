"""Local providers that need no account: environment variables and a file.

Both are read fresh on every fetch by default (``ttl: 0``): the environment is
cheap to read, and the file is parsed again only when it changes on disk.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import SecretConnectionError, SecretNotFoundError, SecretsError, yaml_problem
from .base import (
    Document,
    FetchResult,
    Field,
    Locator,
    Provider,
    SecretId,
    as_text,
    split_key,
)

__all__ = ["EnvProvider", "FileProvider"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class EnvProvider(Provider):
    """``env``: a value from an environment variable.

    Path ``NAME`` prints the variable; ``NAME:key`` reads the variable as a
    JSON object and prints one key. ``prefix`` is prepended to every name, so a
    connection can be limited to, say, ``APP_*`` variables.
    """

    id = "env"
    fields = {
        "prefix": Field(str, default="", doc="prepended to every variable name"),
    }
    default_ttl = 0.0
    path_format = "an environment variable name, optionally NAME:jsonKey"

    def parse_path(self, path: str) -> Locator:
        name, _, key = path.partition(":")
        full = self.options["prefix"] + name
        if not _ENV_NAME.match(full):
            raise self.invalid(
                path,
                f"Wrong environment variable name {name!r}. Should be {self.path_format}",
            )
        if _ and not key:
            raise self.invalid(path, f"Empty key after ':'. Should be {self.path_format}")
        return Locator(SecretId(full), key or None)

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            value = os.environ.get(sid.name)
            if value is None:
                out[sid] = SecretNotFoundError(f"Environment variable {sid.name} is not set")
            else:
                out[sid] = value
        return out

    def select(self, document: Document, locator: Locator) -> str:
        if locator.key is not None and isinstance(document, str):
            try:
                document = json.loads(document)
            except ValueError:
                raise SecretNotFoundError(
                    f"Environment variable {locator.secret.name} is not JSON, "
                    f"so it has no key {locator.key}"
                ) from None
        return super().select(document, locator)

    def check(self) -> None:
        """The environment is always reachable."""


class FileProvider(Provider):
    """``file``: a local YAML or JSON file of ``secretName: {key: value}``.

    Path ``secretName:key``, or ``secretName`` alone for a secret that is a
    single value. The file is parsed again when its size or modification time
    changes. A relative ``path`` in a config file is relative to that file.
    """

    id = "file"
    fields = {
        "path": Field(str, required=True, is_path=True, doc="the secrets file (YAML or JSON)"),
        "format": Field(str, default="auto", choices=("auto", "yaml", "json")),
    }
    default_ttl = 0.0
    path_format = "secretName:key"
    troubleshooting = ("Check that the secrets file exists and is readable",)

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._data: Mapping[str, Any] = {}

    @property
    def file(self) -> Path:
        return Path(self.options["path"]).expanduser()

    def parse_path(self, path: str) -> Locator:
        if not path or path.startswith(":"):
            raise self.invalid(path, f"Wrong key format. Should be {self.path_format}")
        parts = split_key(path)
        if parts is None:
            if ":" in path:
                raise self.invalid(path, f"Wrong key format. Should be {self.path_format}")
            return Locator(SecretId(path), None)
        return Locator(SecretId(parts[0]), parts[1])

    def _load(self) -> Mapping[str, Any]:
        file = self.file
        try:
            st = file.stat()
        except OSError as exc:
            raise SecretConnectionError(
                f"Cannot read secrets file {file}: {exc.strerror or exc}",
                provider=self.name,
                hint="Check the connection's path field",
            ) from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return self._data
            data = self._parse(file)
            self._stamp, self._data = stamp, data
            return data

    def _parse(self, file: Path) -> Mapping[str, Any]:
        fmt = self.options["format"]
        if fmt == "auto":
            fmt = "json" if file.suffix.lower() == ".json" else "yaml"
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        except OSError as exc:
            raise SecretConnectionError(
                f"Cannot read secrets file {file}: {exc.strerror or exc}", provider=self.name
            ) from None
        except json.JSONDecodeError as exc:
            # Only the position: the decoder's document holds secret values.
            raise SecretConnectionError(
                f"Cannot parse secrets file {file} as JSON: {exc.msg} at line {exc.lineno}",
                provider=self.name,
            ) from None
        except yaml.YAMLError as exc:
            raise SecretConnectionError(
                f"Cannot parse secrets file {file} as YAML: {yaml_problem(exc)}",
                provider=self.name,
            ) from None
        if data is None:
            # An empty document is what a reader sees while the file is being
            # rewritten (truncated, not yet filled), as an empty JSON file is
            # a parse error: the file could not answer, which no missing-secret
            # policy softens (never "password=" and exit 0).
            raise SecretConnectionError(
                f"Secrets file {file} holds no secrets (empty; being written?)",
                provider=self.name,
            )
        if not isinstance(data, Mapping):
            raise SecretConnectionError(
                f"Secrets file {file} must hold a mapping of secretName to keys and values",
                provider=self.name,
            )
        return data

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        data = self._load()
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            if sid.name not in data:
                out[sid] = SecretNotFoundError(f"Secret {sid.name} not found in {self.file}")
                continue
            value = data[sid.name]
            out[sid] = value if isinstance(value, (str, Mapping)) else as_text(value)
        return out

    def check(self) -> None:
        self._load()

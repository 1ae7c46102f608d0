"""Checks of user-given paths, URLs and numbers, run before anything is created, started or
trained. Each raises ConfigError naming the option (`option=`: the keyword argument; the CLI
shows it as its --flag) and the value."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

from autocompress.errors import ConfigError
from autocompress.exports import FORMATS
from autocompress.urls import redact


def shown(url: str) -> str:
    """A URL as it may be printed: password masked; unparseable ones not at all."""
    try:
        return redact(url)
    except ValueError:  # not even parseable as a URL: it cannot be shown safely
        return "<unparseable URL>"


def text_file(path: Path) -> None:
    """A YAML argument must be an existing, readable text file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        path.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (undecodable byte at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None


def directory(path: Path | None, option: str, given: Path | None = None) -> None:
    """A directory option must name a directory, or a path that can become one: no file in the way."""
    if path is None:
        return
    p = Path(path)
    given = given or p
    try:
        while not p.exists() and p.parent != p:
            p = p.parent
        ok = p.is_dir()
    except OSError as e:
        raise ConfigError(f"{given}: {e.strerror}", option=option) from None
    if not ok:
        raise ConfigError(f"{given}: {p} is a file, not a directory", option=option)


def output_file(path: Path, option: str) -> None:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the path of the file to write", option=option)
    directory(path.parent, option, given=path)


def export_format(fmt: str) -> None:
    """An export format must be one exports.FORMATS names."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}", option="format")


def storage_url(url: str | None) -> None:
    """An Optuna storage URL is a SQLAlchemy URL: parse it and load its dialect and driver
    (this connects to nothing), and a SQLite file needs an existing directory."""
    if not url:
        return
    from sqlalchemy.engine import make_url  # deferred (heavy): SQLAlchemy, for an RDB URL only

    try:
        u = make_url(url)
        u.get_dialect().import_dbapi()
    except Exception as e:  # ArgumentError, NoSuchModuleError, ImportError of the driver, ...
        raise ConfigError(f"{shown(url)}: not a usable Optuna storage URL ({type(e).__name__}: {e}); "
                          "e.g. postgresql://user@host/db or sqlite:////abs/path/study.db", option="storage") from None
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") \
            and not u.database.startswith("file:"):
        # ('?' starts a query: sqlite:////a/?/study.db names the directory /a/, which SQLite cannot open)
        if u.database.endswith("/") or Path(u.database).is_dir():
            raise ConfigError(f"{shown(url)}: {u.database} is a directory, not a database file", option="storage")
        if not Path(u.database).parent.is_dir():
            raise ConfigError(f"{shown(url)}: directory {Path(u.database).parent} does not exist", option="storage")


def tracking_uri(uri: str | None) -> None:
    """A URI MLflow has no store for fails here rather than after the run dir is made."""
    if not uri:
        return
    try:
        scheme, host = urlsplit(uri).scheme, urlsplit(uri).hostname
    except ValueError as e:
        raise ConfigError(f"{shown(uri)}: not a URI ({e})", option="tracking_uri") from None
    if scheme in ("http", "https") and not host:
        raise ConfigError(f"{shown(uri)}: no host; e.g. http://host:5000", option="tracking_uri")
    try:  # MLflow's own scheme lookup (plugins included); private, so skipped if it moves
        from mlflow.tracking._model_registry.utils import _get_store_registry  # deferred (heavy): MLflow
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        registries = [_tracking_store_registry, _get_store_registry()]
    except ImportError:
        registries = []
    for registry in registries:
        try:
            registry.get_store_builder(uri)
        except Exception:
            raise ConfigError(f"{shown(uri)}: MLflow has no store for scheme {scheme!r}; e.g. http://host:5000, "
                              "sqlite:////abs/path/mlflow.db or a directory", option="tracking_uri") from None


def finite(value: float | None, option: str, minimum: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{value}: must be a finite number", option=option)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{value}: must be >= {minimum:g}", option=option)

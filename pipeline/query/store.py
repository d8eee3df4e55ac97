"""Opening the ClickHouse store: one clickhouse-connect code path for a server and chDB.

`open_client(dsn)` is used by the clickhouse sink (writes) and the query layer (reads).
DSNs:
- `http(s)://user:pass@host:8123/db` — a ClickHouse server;
- `chdb:///abs/path` — embedded chDB keeping its data in that directory;
- None — `chdb://<data_dir>/clickhouse` (see `resolve_dsn`).

chDB runs one engine per process and locks its directory: clients on the same path in
one process share the engine, but a second process cannot open it while the first runs.
chDB reports that as an opaque "Error initializing EmbeddedServer" (the real cause goes to
stderr); `open_client` turns it into `StoreLockedError` with a message a user can act on.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client


class StoreLockedError(RuntimeError):
    """The chDB data directory is held by another process."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"the data directory {path} is in use by another process "
            "(is `tracepipe run` running? its API answers the query commands)"
        )
        self.path = path


class StoreMissingError(ValueError):
    """A chDB directory to read from does not exist (nothing stored there yet)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no tracepipe data at {path} (nothing stored yet, or another --data-dir?)")
        self.path = path


def default_dsn(data_dir: str | Path) -> str:
    """The embedded store of a data directory: `chdb:///<abs data_dir>/clickhouse`."""
    return "chdb://" + str((Path(data_dir) / "clickhouse").resolve())


def resolve_dsn(dsn: str | None, data_dir: str | Path) -> str:
    """The configured DSN, or the embedded default under `data_dir`."""
    return dsn if dsn else default_dsn(data_dir)


def is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def chdb_path(dsn: str) -> str | None:
    """The directory of a `chdb:///abs/path` DSN (None for in-memory chDB)."""
    parsed = urlparse(dsn)
    location = parsed.netloc.rpartition("@")[2] + parsed.path if parsed.netloc else parsed.path
    if location in ("", "memory", ":memory:") or location.startswith(("memory/", ":memory:")):
        return None
    return os.path.realpath(location)


def _directory_locked(path: str) -> bool | None:
    """Whether another process holds chDB's lock on `path` (None when it cannot be told)."""
    status = os.path.join(path, "status")
    if not os.path.exists(status):
        return None
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_client(
    dsn: str,
    *,
    username: str | None = None,
    password: str | None = None,
    settings: dict[str, Any] | None = None,
    create: bool = True,
    http_options: dict[str, Any] | None = None,
) -> Client:
    """A clickhouse-connect client for `dsn` (blocking: call it off the event loop).

    A missing chDB directory is created (writers) or, with `create=False` (readers), raises
    StoreMissingError. Raises StoreLockedError when a chDB directory is held by another process."""
    kwargs: dict[str, Any] = {}
    if settings:
        kwargs["settings"] = settings
    if is_chdb(dsn):
        path = chdb_path(dsn)
        if path is not None:
            if not create and not Path(path).is_dir():
                raise StoreMissingError(path)
            Path(path).mkdir(parents=True, exist_ok=True)
            dsn = "chdb://" + path
        try:
            return clickhouse_connect.get_client(dsn=dsn, **kwargs)
        except Exception as e:
            if path is not None and "EmbeddedServer" in str(e) and _directory_locked(path) is not False:
                raise StoreLockedError(path) from None
            raise
    if username is not None:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    kwargs.update(http_options or {})  # e.g. connect_timeout, send_receive_timeout (servers only)
    return clickhouse_connect.get_client(dsn=dsn, **kwargs)

"""TLS for the listeners, with certificates reloaded from disk without a restart.

aiohttp (OTLP/HTTP, API, /metrics): `server_ssl_context(tls)` returns an SSLContext whose
`wrap_bio` (what asyncio calls for every new connection) first checks the files, at most
once per `reload_interval` seconds (0: every handshake), and, when any of them changed,
builds a fresh inner context; connections are then wrapped by the current inner context.
A file caught half-written fails to load: the previous certificate stays in use, logged.

gRPC (OTLP/gRPC): `grpc_server_credentials(tls)` uses gRPC's certificate-configuration
fetcher, which gRPC core calls on each new handshake; it returns a new configuration
only when the files changed (checked at most once per `reload_interval`). gRPC core
accepts TLS 1.2 and 1.3 and offers no minimum-version setting, so `min_version: "1.3"` is
refused at config load for gRPC listeners.

`client_ca_file` set: clients must present a certificate signed by one of its CAs (mTLS).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from pipeline.server_config import TlsConfig

log = logging.getLogger("tracepipe.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class _FileWatch:
    """Remembers the files' (mtime, size, inode); says when they changed, at most every `interval`."""

    def __init__(self, paths: list[str], interval: float) -> None:
        self.paths = paths
        self.interval = interval
        self._stamp = self._read()
        self._next = time.monotonic() + interval
        self._lock = threading.Lock()

    def _read(self) -> tuple[Any, ...]:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.interval
            stamp = self._read()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            return True

    def retry(self) -> None:
        """The changed files could not be loaded: look again at the next check."""
        with self._lock:
            self._stamp = ()


def _files(tls: TlsConfig) -> list[str]:
    return [tls.cert_file, tls.key_file] + ([tls.client_ca_file] if tls.client_ca_file else [])


def build_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A plain server SSLContext from the files (raises ssl.SSLError / OSError)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ReloadingSSLContext(ssl.SSLContext):
    """Delegates each new connection to the context built from the current files."""

    _tls: TlsConfig
    _current: ssl.SSLContext
    _watch: _FileWatch

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        self.reload_if_changed()
        return self._current.wrap_bio(*args, **kwargs)

    def reload_if_changed(self) -> bool:
        if not self._watch.changed():
            return False
        try:
            self._current = build_ssl_context(self._tls)
        except (OSError, ssl.SSLError, ValueError) as e:
            log.warning("TLS: could not load the changed certificate files (%s); keeping the previous ones", e)
            self._watch.retry()
            return False
        log.info("TLS: loaded the changed certificate %s", self._tls.cert_file)
        return True


def server_ssl_context(tls: TlsConfig) -> ReloadingSSLContext:
    ctx = ReloadingSSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx._tls = tls
    ctx._current = build_ssl_context(tls)
    ctx._watch = _FileWatch(_files(tls), tls.reload_interval)
    return ctx


def _grpc_certificate_configuration(tls: TlsConfig) -> Any:
    key = Path(tls.key_file).read_bytes()
    cert = Path(tls.cert_file).read_bytes()
    roots = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=roots)


def grpc_server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    build_ssl_context(tls)  # the same checks (readable, key matches) as aiohttp, with a clear error
    watch = _FileWatch(_files(tls), tls.reload_interval)

    def fetch() -> Any:
        if not watch.changed():
            return None
        try:
            build_ssl_context(tls)
            config = _grpc_certificate_configuration(tls)
        except (OSError, ssl.SSLError, ValueError) as e:
            log.warning("TLS (gRPC): could not load the changed certificate files (%s); keeping the previous ones", e)
            watch.retry()
            return None
        log.info("TLS (gRPC): loaded the changed certificate %s", tls.cert_file)
        return config

    return grpc.dynamic_ssl_server_credentials(
        _grpc_certificate_configuration(tls), fetch, require_client_authentication=bool(tls.client_ca_file)
    )


def check_files(tls: TlsConfig, path: str, errors: list[str]) -> None:
    """Config-load check: the files exist and form a usable context."""
    missing = False
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, name)
        if value and not os.path.isfile(value):
            errors.append(f"{path}.{name}: file not found: {value}")
            missing = True
    if missing:
        return
    try:
        build_ssl_context(tls)
    except FileNotFoundError as e:
        errors.append(f"{path}: file not found: {e.filename}")
    except (OSError, ssl.SSLError, ValueError) as e:
        errors.append(f"{path}: cannot load the certificate files: {e}")

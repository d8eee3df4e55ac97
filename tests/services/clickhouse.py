"""ClickHouse for tests: embedded chDB (local) or a ClickHouse server container (HTTP interface).

The local kind is chDB, which runs in-process and allows ONE engine path per process: the
`clickhouse_dsn` fixture (tests/conftest.py) therefore hands out the session's `chdb_dsn`
locally and only starts this kind's container variant when TRACEPIPE_TEST_CONTAINERS=1 and
Docker is reachable. That is how the sink and query layer get their run against the
`http://user:pass@host:8123/db` path of the same clickhouse-connect code.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tests.services import CONTAINER, LOCAL, RunningService

IMAGE = "clickhouse/clickhouse-server:25.8"
USER, PASSWORD = "tracepipe", "tracepipe-test"


def _start_local() -> RunningService:
    path = str(Path(tempfile.mkdtemp(prefix="tracepipe-chdb-")).resolve())
    return RunningService("clickhouse", "", 0, f"chdb://{path}", workdir=path)


def _start_container() -> RunningService:
    import clickhouse_connect
    from testcontainers.core.container import DockerContainer  # type: ignore[import-not-found]

    container = (
        DockerContainer(IMAGE)
        .with_env("CLICKHOUSE_USER", USER)
        .with_env("CLICKHOUSE_PASSWORD", PASSWORD)
        .with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
        .with_exposed_ports(8123)
    )
    container.start()
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(8123))
    url = f"http://{USER}:{PASSWORD}@{host}:{port}/default"
    deadline = time.monotonic() + 90
    while True:
        try:
            clickhouse_connect.get_client(dsn=url).close()
            break
        except Exception:
            if time.monotonic() > deadline:
                container.stop()
                raise
            time.sleep(0.5)
    return RunningService("clickhouse", host, port, url, container=container)


LOCAL["clickhouse"] = _start_local
CONTAINER["clickhouse"] = _start_container

"""Shared fixtures. Services are started for real on free loopback ports (see tests/services)."""

from __future__ import annotations

import pytest

from tests.services import free_port, start_service


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, by their `slow(seconds=N)` mark (what they took here), the rest in
    their order: tests/run hands whole files to its xdist processes as each gets free, and a
    200 s file handed out last kept one process busy alone for minutes."""
    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.kwargs.get("seconds", 1)) if mark is not None else 0.0

    items.sort(key=seconds, reverse=True)  # stable: equal weights keep the collection order


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chDB directory of this pytest session: chDB allows one engine path per process,
    so every in-process chDB test uses this DSN and isolates itself by `database` name
    (the `chdb_database` fixture), closing its clients when done."""
    return "chdb://" + str(tmp_path_factory.mktemp("chdb").resolve())


@pytest.fixture(scope="session")
def clickhouse_dsn(chdb_dsn: str):
    """The ClickHouse the sink and query tests run against: the session's chDB directory, or a
    ClickHouse server container (HTTP) when TRACEPIPE_TEST_CONTAINERS=1 and Docker is reachable."""
    from tests.services import containers_enabled

    if not containers_enabled():
        yield chdb_dsn
        return
    svc = start_service("clickhouse")
    yield svc.url
    svc.stop()


@pytest.fixture
def chdb_database(request: pytest.FixtureRequest) -> str:
    """A database name of its own for this test (in the session's chDB directory)."""
    import re
    import uuid

    return "t_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:6]


@pytest.fixture
def persistent_kafka():
    """A Tansu broker whose data survives `restart()` (s3:// storage, tests/services/kafka.py)."""
    from tests.services.kafka import PersistentKafka, start_local_kafka

    svc = start_local_kafka(persistent=True)
    assert isinstance(svc, PersistentKafka)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def redis_service():
    svc = start_service("redis")
    yield svc
    svc.stop()


@pytest.fixture(autouse=True)
def _no_role_outlives_its_test():
    """A test that fails halfway must not leave `tracepipe worker/receiver` processes behind
    (module-scoped fixtures start theirs before this runs, so theirs are kept)."""
    from tests.distributed_helpers import STARTED, reap_roles

    since = len(STARTED)
    yield
    reap_roles(since)


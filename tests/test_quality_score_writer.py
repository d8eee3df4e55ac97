"""The quality score writer against a real chDB: rows it drops are counted by reason."""

from __future__ import annotations

import asyncio

import clickhouse_connect
from prometheus_client import CollectorRegistry

from pipeline.quality.score_writer import QualityScoreWriter
from pipeline.query.scores import SCORES_TABLE, Score
from pipeline.query.traces import TraceQueries

TID = "5b8efff798038103d269b633813fc60c"
DROPPED = "tracepipe_quality_score_rows_dropped_total"


def _score(i: int) -> Score:
    return Score(TID, f"{i:016x}", "quality.similarity", "numeric", 0.5, "", "", "quality")


def _dropped(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value(DROPPED, {"reason": reason})


def test_rows_past_a_full_buffer_are_counted_and_the_rest_written(chdb_dsn: str, chdb_database: str) -> None:
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    client.command(f"CREATE DATABASE `{chdb_database}`")
    queries = TraceQueries.from_client(client, database=chdb_database)
    registry = CollectorRegistry()
    writer = QualityScoreWriter(queries, registry=registry, max_pending=2)
    assert (_dropped(registry, "queue_full"), _dropped(registry, "insert_failed")) == (0.0, 0.0)

    async def run() -> int:
        for i in range(3):
            writer.record(_score(i), "default")
        await writer.close()
        rows = await queries._query(f"SELECT count() FROM `{chdb_database}`.`{SCORES_TABLE}`", {})
        await queries.close()
        return int(rows[0][0])

    assert asyncio.run(run()) == 2
    assert (_dropped(registry, "queue_full"), _dropped(registry, "insert_failed")) == (1.0, 0.0)
    assert writer.dropped == {"queue_full": 1, "insert_failed": 0}


def test_rows_a_failed_write_leaves_at_shutdown_are_counted(chdb_dsn: str, chdb_database: str) -> None:
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    # No such database: every write fails (UNKNOWN_DATABASE), in chDB itself.
    queries = TraceQueries.from_client(client, database=chdb_database)
    registry = CollectorRegistry()
    writer = QualityScoreWriter(queries, registry=registry)

    async def run() -> None:
        for i in range(3):
            writer.record(_score(i), "default")
        await writer.flush()  # fails: the rows stay queued for the next write
        assert writer.written == 0 and _dropped(registry, "insert_failed") == 0.0
        await writer.close()  # the last write fails too: the rows are lost
        await queries.close()

    asyncio.run(run())
    assert (_dropped(registry, "queue_full"), _dropped(registry, "insert_failed")) == (0.0, 3.0)

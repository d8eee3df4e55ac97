"""The scores table's DDL runs once per client and database, against a real chDB."""

from __future__ import annotations

import asyncio
from typing import Any

import clickhouse_connect

from pipeline.query.scores import SCORES_TABLE, Score, insert_score, insert_scores
from pipeline.query.traces import TraceQueries

TID = "5b8efff798038103d269b633813fc60c"


class CountingClient:
    """A real clickhouse-connect client that counts the CREATE TABLE statements sent through it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.creates = 0

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().upper().startswith("CREATE TABLE"):
            self.creates += 1
        return self.client.command(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _score(i: int, source: str = "quality") -> Score:
    return Score(TID, f"{i:016x}", "quality.similarity", "numeric", 0.5, "", "", source)


def test_the_table_is_created_by_the_first_insert_only_and_again_after_a_drop(
    chdb_dsn: str, chdb_database: str
) -> None:
    client = CountingClient(clickhouse_connect.get_client(dsn=chdb_dsn))
    client.command(f"CREATE DATABASE `{chdb_database}`")
    queries = TraceQueries.from_client(client, database=chdb_database)
    table = f"`{chdb_database}`.`{SCORES_TABLE}`"

    async def count() -> int:
        return int((await queries._query(f"SELECT count() FROM {table}", {}))[0][0])

    async def run() -> list[tuple[int, int]]:
        seen = []
        await insert_scores(queries, [(_score(0), "default")])
        seen.append((client.creates, await count()))
        await insert_scores(queries, [(_score(1), "default")])
        await insert_score(queries, _score(2, "api"), "default")
        seen.append((client.creates, await count()))
        await queries.run_on_client(lambda c: c.command(f"DROP TABLE {table}"))
        await insert_scores(queries, [(_score(3), "default")])  # finds the table gone: creates it again
        seen.append((client.creates, await count()))
        await insert_scores(queries, [(_score(4), "default")])
        seen.append((client.creates, await count()))
        await queries.close()
        return seen

    assert asyncio.run(run()) == [(1, 1), (1, 3), (2, 1), (2, 2)]


def test_each_database_of_a_client_gets_its_table(chdb_dsn: str, chdb_database: str) -> None:
    client = CountingClient(clickhouse_connect.get_client(dsn=chdb_dsn))
    other = chdb_database + "_b"
    for db in (chdb_database, other):
        client.command(f"CREATE DATABASE `{db}`")
    a = TraceQueries.from_client(client, database=chdb_database)
    b = TraceQueries.from_client(client, database=other)

    async def run() -> list[int]:
        await insert_scores(a, [(_score(0), "default")])
        await insert_scores(b, [(_score(0), "default")])
        await insert_scores(b, [(_score(1), "default")])
        rows = await b._query(f"SELECT count() FROM `{other}`.`{SCORES_TABLE}`", {})
        await a.close()
        await b.close()
        return [client.creates, int(rows[0][0])]

    assert asyncio.run(run()) == [2, 2]

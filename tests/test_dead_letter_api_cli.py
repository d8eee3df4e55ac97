"""`GET/POST /api/dead-letters...` and `tracepipe dead-letter list|show|replay` (local store path).

The CLI against a running pipeline is covered by tests/test_fault_poison.py."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from pipeline.api import ApiContext, build_app
from pipeline.chain import Chain, PipelineRun
from pipeline.cli import main
from pipeline.component import BaseSink, ComponentContext, SinkError
from pipeline.config import RetryConfig
from pipeline.dead_letter.service import DeadLetterService
from pipeline.dead_letter.store import LocalDeadLetterStore
from pipeline.services import Services
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from tests.services import free_port


class Gate(BaseSink):
    """Refuses spans named 'poison' (not retryably) until opened."""

    def __init__(self, cid: str, ctx: ComponentContext) -> None:
        super().__init__(cid, ctx)
        self.open = False
        self.stored: list[str] = []

    async def write(self, batch: SpanBatch) -> None:
        if not self.open and any(s.name == "poison" for s in batch.spans):
            raise SinkError("Code: 469. constraint", retryable=False, reason="constraint_violation")
        self.stored.extend(s.span_id for s in batch.spans)


def _spans(n: int, bad: set[int]) -> list[Span]:
    return [Span(f"{i + 1:032x}", f"{i + 1:016x}", "poison" if i in bad else f"s{i}", 10 + i, 20 + i)
            for i in range(n)]


async def _setup(tmp_path: Path) -> tuple[Gate, Chain, LocalDeadLetterStore]:
    t = Telemetry()
    gate = Gate("gate", ComponentContext("gate", t, MemoryStateStore(), tmp_path, logging.getLogger("gate")))
    chain = Chain([PipelineRun("traces", [], ["gate"])], {"gate": gate}, t,
                  RetryConfig(initial_backoff=0.001, max_backoff=0.002))
    store = LocalDeadLetterStore.under(tmp_path)
    chain.dead_letter = store
    await chain.run(SpanBatch(_spans(16, {3, 9}), "b1"))
    return gate, chain, store


async def test_api_lists_shows_and_replays_dead_letters(tmp_path: Path):
    gate, chain, store = await _setup(tmp_path)
    ctx = ApiContext(telemetry=Telemetry(), services=Services(dead_letters=DeadLetterService(store, chain)))
    async with TestClient(TestServer(build_app(ctx))) as client:
        listed = await (await client.get("/api/dead-letters")).json()
        assert [(e["spans"], e["reason"], e["component"], e["status"]) for e in listed["entries"]] == [
            (1, "constraint_violation", "gate", "new")] * 2
        assert listed["spans_by_status"] == {"new": 2}
        first = listed["entries"][0]["id"]
        shown = await (await client.get(f"/api/dead-letters/{first}")).json()
        assert [s["name"] for s in shown["span_list"]] == ["poison"]
        assert shown["otlp"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "poison"
        assert (await client.get("/api/dead-letters/dl-unknown")).status == 404
        assert (await client.post("/api/dead-letters/dl-unknown/replay")).status == 404
        assert (await client.get("/api/dead-letters?status=lost")).status == 400
        assert (await client.get("/api/dead-letters?limit=0")).status == 400
        again = await (await client.post(f"/api/dead-letters/{first}/replay")).json()
        assert (again["status"], again["dead_lettered_again"]) == ("failed_again", 1)
        gate.open = True  # the fix
        done = await (await client.post("/api/dead-letters/replay")).json()
        assert (done["entries"], done["stored"], done["dead_lettered_again"]) == (2, 2, 0)
        statuses = await (await client.get("/api/dead-letters")).json()
        assert sorted(e["status"] for e in statuses["entries"]) == ["failed_again", "replayed", "replayed"]
    assert sorted(gate.stored) == sorted(f"{i + 1:016x}" for i in range(16))
    await store.close()


async def test_api_without_a_dead_letter_store_answers_503():
    async with TestClient(TestServer(build_app(ApiContext(telemetry=Telemetry())))) as client:
        assert (await client.get("/api/dead-letters")).status == 503


def test_cli_reads_the_store_itself_when_no_pipeline_answers(tmp_path: Path):
    async def setup() -> None:
        _, _, store = await _setup(tmp_path)
        await store.close()

    asyncio.run(setup())
    dead_api = f"127.0.0.1:{free_port()}"
    runner = CliRunner()
    listed = runner.invoke(main, ["dead-letter", "list", "--data-dir", str(tmp_path), "--api", dead_api])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("constraint_violation") == 2 and "gate" in listed.output
    as_json = json.loads(runner.invoke(main, ["dead-letter", "list", "--json", "--data-dir", str(tmp_path),
                                              "--api", dead_api]).output)
    entry_id = as_json["entries"][0]["id"]
    shown = runner.invoke(main, ["dead-letter", "show", entry_id, "--data-dir", str(tmp_path), "--api", dead_api])
    assert shown.exit_code == 0 and "reason:      constraint_violation" in shown.output and "'poison'" in shown.output
    missing = runner.invoke(main, ["dead-letter", "show", "dl-x", "--data-dir", str(tmp_path), "--api", dead_api])
    assert missing.exit_code == 1 and "not found" in missing.output
    usage = runner.invoke(main, ["dead-letter", "replay", "--data-dir", str(tmp_path), "--api", dead_api])
    assert usage.exit_code == 2 and "give one ID or --all" in usage.output
    empty = runner.invoke(main, ["dead-letter", "list", "--data-dir", str(tmp_path / "none"), "--api", dead_api])
    assert empty.exit_code == 1 and "no dead-letter store" in empty.output

"""Builds the chain (processors per pipeline, sinks by id) from a validated Config.

Both runtimes call `build_chain`; only the transport around it differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.chain import Chain, PipelineRun
from pipeline.component import ComponentContext, Processor, Sink
from pipeline.config import Config
from pipeline.services import Services
from pipeline.state import MemoryStateStore, StateStore
from pipeline.telemetry import Telemetry

EventEmitter = Callable[[str, dict[str, Any]], None]


def build_chain(
    config: Config,
    telemetry: Telemetry,
    *,
    state: StateStore | None = None,
    emit_event: EventEmitter | None = None,
    services: Services | None = None,
) -> Chain:
    from processors import PROCESSOR_FACTORIES
    from sinks import SINK_FACTORIES

    state = state if state is not None else MemoryStateStore()
    data_dir = Path(config.service.data_dir)

    def ctx(component_id: str) -> ComponentContext:
        return ComponentContext(
            component_id=component_id,
            telemetry=telemetry,
            state=state,
            data_dir=data_dir,
            logger=logging.getLogger(f"tracepipe.{component_id}"),
            emit_event=emit_event,
            services=services if services is not None else Services(),
        )

    used_sinks: list[str] = []
    for pipe in config.service.pipelines.values():
        for sid in pipe.sinks:
            if sid not in used_sinks:
                used_sinks.append(sid)
    sinks: dict[str, Sink] = {}
    for sid in used_sinks:
        spec = config.sinks[sid]
        sinks[sid] = SINK_FACTORIES[spec.type].create(sid, spec.config, ctx(sid))

    runs: list[PipelineRun] = []
    for pname, pipe in config.service.pipelines.items():
        procs: list[Processor] = []
        for pid in pipe.processors:
            spec = config.processors[pid]
            procs.append(PROCESSOR_FACTORIES[spec.type].create(pid, spec.config, ctx(pid)))
        runs.append(PipelineRun(name=pname, processors=procs, sink_ids=list(pipe.sinks), source=pipe.source))
    return Chain(runs, sinks, telemetry, retry=config.service.retry, logger=logging.getLogger("tracepipe.chain"))

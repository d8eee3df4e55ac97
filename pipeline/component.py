"""The component model: Processor and Sink protocols, factories, and what a component gets.

Modelled on the OpenTelemetry Collector: every component type has a factory naming its
type, its pydantic config model (validated at load, with the YAML path on error) and a
constructor. Components are referenced in pipelines by id `type[/name]`, so one type can
appear twice with different settings (`cost`, `cost/strict`).

Processors are synchronous, pure logic over a batch. Sinks are async I/O shells. Neither
imports a runtime (Faust, aiokafka): the runtimes adapt to them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pipeline.spans import SpanBatch

if TYPE_CHECKING:
    from pipeline.services import Services
    from pipeline.state import StateStore
    from pipeline.telemetry import Telemetry


def _services() -> Services:
    from pipeline.services import Services  # pipeline.services imports nothing of tracepipe at run time

    return Services()


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


AlertEmitter = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class ComponentContext:
    """What the runtime hands a component when building it."""

    component_id: str
    telemetry: Telemetry
    state: StateStore
    data_dir: Path
    logger: logging.Logger
    # Derived events (alerts) leave through here: an in-process channel (embedded) or
    # the alerts topic (distributed). None until a runtime wires it.
    emit_event: Callable[[str, dict[str, Any]], None] | None = None
    # The process's shared services (budget store, clocks, ...): pipeline/services.py.
    services: Services = field(default_factory=lambda: _services())


@runtime_checkable
class Processor(Protocol):
    """Transforms batches of spans. Pure logic: no network I/O on the hot path.

    - `process(batch)` returns the batch to pass on (possibly fewer spans, possibly the
      same object mutated in place).
    - `flush()` returns spans held back (e.g. tail-sampling buffers) so shutdown loses
      nothing; most processors return an empty list.
    - `close()` releases resources.
    """

    component_id: str

    def process(self, batch: SpanBatch) -> SpanBatch: ...

    def flush(self) -> list[Any]: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Writes batches somewhere. `write` returning normally is the acknowledgement.

    A sink raises `SinkError` (retryable or not) when it could not store the batch; the
    runtime retries with backoff and never commits a batch that a sink has not acked.
    Writes must be idempotent per `batch.batch_id`: redelivery must not double count.
    """

    component_id: str

    async def start(self) -> None: ...

    async def write(self, batch: SpanBatch) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...

    def ready(self) -> bool: ...


class SinkError(Exception):
    """A sink could not store a batch. `retryable` says whether trying again can help.

    `reason` classifies a non-retryable refusal (one of `pipeline.dead_letter.REASONS`,
    e.g. "overflow", "type_mismatch"); `stored` is how many leading spans of the batch the
    sink did store before failing (chunked inserts), so the chain isolates only the rest."""

    def __init__(self, message: str, *, retryable: bool = True, reason: str | None = None, stored: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
        self.stored = stored


class BaseProcessor:
    """Convenience base with the no-op parts of the Processor protocol."""

    def __init__(self, component_id: str, ctx: ComponentContext) -> None:
        self.component_id = component_id
        self.ctx = ctx

    def process(self, batch: SpanBatch) -> SpanBatch:  # pragma: no cover - overridden
        return batch

    def flush(self) -> list[Any]:
        return []

    def close(self) -> None:
        return None


class BaseSink:
    """Convenience base with the no-op parts of the Sink protocol."""

    def __init__(self, component_id: str, ctx: ComponentContext) -> None:
        self.component_id = component_id
        self.ctx = ctx

    async def start(self) -> None:
        return None

    async def write(self, batch: SpanBatch) -> None:  # pragma: no cover - overridden
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def ready(self) -> bool:
        return True


C = TypeVar("C", bound=ComponentConfig)
T = TypeVar("T")


@dataclass(frozen=True)
class Factory(Generic[C, T]):
    """Type name, config model and constructor of one component type."""

    type: str
    config_model: type[C]
    create: Callable[[str, C, ComponentContext], T]
    description: str = ""


def split_component_id(component_id: str) -> tuple[str, str]:
    """`cost/strict` -> ("cost", "strict"); `cost` -> ("cost", "")."""
    type_name, _, name = component_id.partition("/")
    return type_name, name

"""Dead letters: spans a sink (or a processor) refused for good, kept with why, who and when.

The chain (pipeline/chain.py) isolates refused spans by bisecting the batch a sink rejected
and hands each isolated group to a `DeadLetterPublisher`:

- embedded mode: `LocalDeadLetterStore` (pipeline/dead_letter/store.py), a SQLite file
  under `<data_dir>/dead-letter/` (WAL journal: a committed entry survives kill -9);
- distributed mode: `KafkaDeadLetterPublisher` (pipeline/dead_letter/kafka.py), the topic
  `transport.kafka.dead_letter_topic` (default `tracepipe.dead-letter`).

An entry holds the spans re-encoded as an OTLP `ExportTraceServiceRequest` (protobuf), the
reason (one of `REASONS`, the label of `tracepipe_dead_letter_spans_total{sink,reason}`),
the id of the component that refused them, the pipeline, the error text (never span data)
and the time. `DeadLetterService` (pipeline/dead_letter/service.py) lists, shows and
replays entries for the API and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The bounded set of reasons (metric label values).
REASONS = (
    "type_mismatch",  # the value has the wrong type for its column
    "overflow",  # a number or time outside its type's range (ClickHouse 407, 321, 69)
    "parse_error",  # the storage could not parse a value
    "constraint_violation",  # a table constraint refused the row
    "bad_argument",  # a function of the insert path refused an argument
    "too_large",  # a value larger than the storage accepts
    "rejected",  # refused as not retryable, no finer class known
    "retries_exhausted",  # kept failing (retryably) past service.retry's budget
    "processor_error",  # a processor raised on the span
)


def reason_label(reason: str | None) -> str:
    """`reason` if it is one of REASONS, else "rejected" (keeps the metric bounded)."""
    return reason if reason in REASONS else "rejected"


@dataclass
class DeadLetter:
    """One group of refused spans. `request` is OTLP ExportTraceServiceRequest protobuf."""

    request: bytes
    spans: int
    reason: str
    component: str  # the sink (or processor) that refused the spans
    pipeline: str
    error: str
    batch_id: str
    at: float  # unix seconds
    kind: str = "sink"  # "sink" or "processor"
    replay_of: str | None = None  # the entry this one came back from, when a replay failed again
    id: str = ""
    status: str = "new"  # "new" | "replayed" | "failed_again"
    replayed_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The entry without its spans (for listings)."""
        return {
            "id": self.id,
            "at": self.at,
            "spans": self.spans,
            "reason": self.reason,
            "component": self.component,
            "kind": self.kind,
            "pipeline": self.pipeline,
            "error": self.error,
            "batch_id": self.batch_id,
            "status": self.status,
            "replayed_at": self.replayed_at,
            "replay_of": self.replay_of,
        }


@runtime_checkable
class DeadLetterPublisher(Protocol):
    """Where the chain sends dead letters. `publish` returning is the acknowledgement; it
    raises when the entry could not be kept (the chain then counts the spans as dropped)."""

    async def publish(self, entry: DeadLetter) -> None: ...

    async def close(self) -> None: ...

"""Self-telemetry: the Prometheus metrics of tracepipe itself, defined in one place.

Every component kind gets the same counters, labelled by component id, as the OTel
Collector does (`otelcol_receiver_accepted_spans` ...). Components never create metrics
ad hoc: they use the objects here, so names and labels stay uniform and documented.

Label values are low-cardinality only. `LabelGuard` caps the distinct values of a
label (model names come from clients) and folds the excess into "other".
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

NAMESPACE = "tracepipe"

# Buckets for span durations: 5 ms .. 5 min, LLM calls are slow.
SPAN_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Buckets for internal latencies (batch, sink write, produce): 100 us .. 30 s.
INTERNAL_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class LabelGuard:
    """Caps the number of distinct values a label may take; the rest become "other".
    Each admitted value is redacted and cut to `max_length` characters first
    (pipeline.logs.safe_value): a label never carries a secret or a long raw value. A value
    longer than `max_value_chars` is no model or service name: it becomes "other" unscanned."""

    max_value_chars = 256

    def __init__(self, limit: int = 200, max_length: int = 64) -> None:
        self.limit = limit
        self.max_length = max_length
        self._seen: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: str | None) -> str:
        if not value:
            return "unknown"
        if len(value) > self.max_value_chars:
            return "other"
        seen = self._seen.get(label)
        if seen is not None:
            safe = seen.get(value)
            if safe is not None:
                return safe
        with self._lock:
            seen = self._seen.setdefault(label, {})
            safe = seen.get(value)
            if safe is not None:
                return safe
            if len(seen) >= self.limit:
                return "other"
            from pipeline.logs import safe_value

            safe = seen[value] = safe_value(value, self.max_length)
            return safe


class Telemetry:
    """All metrics of one tracepipe process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, label_limit: int = 200) -> None:
        self.registry = registry or CollectorRegistry()
        self.guard = LabelGuard(label_limit)
        r = self.registry
        ns = NAMESPACE

        # --- receivers -------------------------------------------------------------
        self.receiver_accepted_spans = Counter(
            "receiver_accepted_spans", "Spans accepted by a receiver and handed to the transport.",
            ["receiver"], namespace=ns, registry=r,
        )
        self.receiver_refused_spans = Counter(
            "receiver_refused_spans",
            "Spans a receiver refused (reason: queue_full, transport_unavailable, invalid, too_large, ...).",
            ["receiver", "reason"], namespace=ns, registry=r,
        )
        self.receiver_clamped_spans = Counter(
            "receiver_clamped_spans",
            "Spans a receiver accepted after clamping a value storage cannot hold (reason: end_before_start); "
            "flagged with the attribute tracepipe.clamped.",
            ["receiver", "reason"], namespace=ns, registry=r,
        )
        self.receiver_requests = Counter(
            "receiver_requests", "Export requests answered, by outcome code (ok, partial, or the error).",
            ["receiver", "code"], namespace=ns, registry=r,
        )
        self.receiver_truncated_values = Counter(
            "receiver_truncated_values",
            "Values a receiver truncated to its limits (field: attribute_value, name).",
            ["receiver", "field"], namespace=ns, registry=r,
        )
        self.auth_failures = Counter(
            "auth_failures", "Requests refused by auth (reason: missing, malformed, invalid, forbidden).",
            ["listener", "reason"], namespace=ns, registry=r,
        )
        # --- logs and metrics receivers (pipeline/receivers/otlp_signals.py) ---------
        self.receiver_accepted_log_records = Counter(
            "receiver_accepted_log_records",
            "Log records accepted by a receiver (stored, or handed to the Kafka logs topic).",
            ["receiver"], namespace=ns, registry=r,
        )
        self.receiver_refused_log_records = Counter(
            "receiver_refused_log_records",
            "Log records a receiver refused (reason: invalid, too_many_records, busy, unavailable, ...).",
            ["receiver", "reason"], namespace=ns, registry=r,
        )
        self.receiver_accepted_data_points = Counter(
            "receiver_accepted_data_points", "Metric data points accepted (counted) by a receiver.",
            ["receiver"], namespace=ns, registry=r,
        )
        self.receiver_refused_data_points = Counter(
            "receiver_refused_data_points", "Metric data points a receiver refused (reason: too_many_points).",
            ["receiver", "reason"], namespace=ns, registry=r,
        )
        self.genai_log_records = Counter(
            "genai_log_records", "GenAI log events received, by event name (gen_ai.* names only, else other).",
            ["event"], namespace=ns, registry=r,
        )
        self.receiver_wrong_protocol_connections = Counter(
            "receiver_wrong_protocol_connections",
            "Connections refused for speaking the wrong protocol (protocol: http2_prior_knowledge = a gRPC "
            "client on the OTLP/HTTP port).",
            ["receiver", "protocol"], namespace=ns, registry=r,
        )
        self.genai_client_metric_points_skipped = Counter(
            "genai_client_metric_points_skipped",
            "OTLP GenAI client metric points not re-exposed (reason: too_many_streams, bucket_mismatch).",
            ["reason"], namespace=ns, registry=r,
        )
        from pipeline.genai_client_metrics import GenAiClientMetrics  # tracepipe_genai_client_* histograms

        self.genai_client = GenAiClientMetrics(self.guard, self.genai_client_metric_points_skipped)
        r.register(self.genai_client)
        # --- transport -------------------------------------------------------------
        self.queue_size = Gauge(
            "queue_size", "Spans waiting in or in flight from the transport queue.",
            ["transport"], namespace=ns, registry=r,
        )
        self.queue_capacity = Gauge(
            "queue_capacity", "Capacity of the transport queue in spans.",
            ["transport"], namespace=ns, registry=r,
        )
        # --- embedded write-ahead log and health ------------------------------------
        self.wal_bytes = Gauge("wal_bytes", "Bytes in the embedded write-ahead log's segments.",
                               namespace=ns, registry=r)
        self.wal_segments = Gauge("wal_segments", "Segment files of the embedded write-ahead log.",
                                  namespace=ns, registry=r)
        self.wal_fsync_duration = Histogram(
            "wal_fsync_duration_seconds", "Duration of one (group) fsync of the write-ahead log.",
            buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.wal_replayed_records = Counter(
            "wal_replayed_records", "Write-ahead log records replayed through the chain at start.",
            namespace=ns, registry=r,
        )
        self.wal_corrupt_records = Counter(
            "wal_corrupt_records", "Torn or corrupt write-ahead log records skipped at start.",
            namespace=ns, registry=r,
        )
        self.last_batch_completed = Gauge(
            "last_batch_completed_timestamp_seconds", "Unix time the worker last completed a batch.",
            namespace=ns, registry=r,
        )
        # --- kafka (distributed runtime) -------------------------------------------
        self.kafka_produce_duration = Histogram(
            "kafka_produce_duration_seconds", "Time from handing a request's messages to Kafka to their acks.",
            ["topic"], buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.kafka_produced_messages = Counter(
            "kafka_produced_messages", "Messages Kafka acknowledged (one per partition a request's traces go to).",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_produce_failures = Counter(
            "kafka_produce_failures", "Requests not produced, by reason (timeout, unavailable, full, too_large).",
            ["topic", "reason"], namespace=ns, registry=r,
        )
        self.kafka_in_flight_spans = Gauge(
            "kafka_in_flight_spans", "Spans a receiver handed to Kafka and awaits acks for.",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_consumer_lag = Gauge(
            "kafka_consumer_lag_messages", "Messages behind the partition's end offset, as seen by this worker.",
            ["topic", "partition"], namespace=ns, registry=r,
        )
        self.kafka_consumed_messages = Counter(
            "kafka_consumed_messages", "Messages a worker took off a topic.", ["topic"], namespace=ns, registry=r,
        )
        self.kafka_malformed_messages = Counter(
            "kafka_malformed_messages", "Messages that are not an OTLP ExportTraceServiceRequest (skipped).",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_commits = Counter(
            "kafka_commits", "Offset commits of a worker's batches: ok, or failed (redelivered and re-cut).",
            ["outcome"], namespace=ns, registry=r,
        )
        self.kafka_redelivered_messages = Counter(
            "kafka_redelivered_messages",
            "Messages a worker received again after a crash or rebalance (re-cut into their recorded batch).",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_released_messages = Counter(
            "kafka_released_messages",
            "Messages a worker held (waiting to complete a recorded batch) and let go uncommitted, by reason: "
            "rebalance or shutdown (the partition's next owner gets them again), recovery (taken while Faust was "
            "still recovering its tables: read again after its seek to the committed offsets) or forced "
            "(processed as a new batch after the hold timeout: possibly stored twice, never lost).",
            ["topic", "reason"], namespace=ns, registry=r,
        )
        self.kafka_rereads = Counter(
            "kafka_rereads",
            "Times a worker found offsets missing from what its consumer delivered and re-read from the hole.",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_unconfirmed_cuts = Counter(
            "kafka_unconfirmed_cuts",
            "Times Kafka did not acknowledge a batch's recorded cut within produce_timeout: the batch "
            "is held, not stored, and its cut sent again on the next housekeeping tick.",
            ["topic"], namespace=ns, registry=r,
        )
        self.kafka_offset_gaps = Counter(
            "kafka_offset_gaps",
            "Offsets the broker deleted (log retention) before a worker processed them, gone past.",
            ["topic"], namespace=ns, registry=r,
        )
        self.worker_batches_in_flight = Gauge(
            "worker_batches_in_flight", "Batches a worker is running through the chain and sinks.",
            namespace=ns, registry=r,
        )
        self.kafka_events_published = Counter(
            "kafka_events_published", "Derived events (alerts, ...) published to Kafka, by topic.",
            ["topic"], namespace=ns, registry=r,
        )
        # --- processors ------------------------------------------------------------
        self.processor_dropped_spans = Counter(
            "processor_dropped_spans", "Spans a processor removed from the stream, by reason.",
            ["processor", "reason"], namespace=ns, registry=r,
        )
        self.processor_duration = Histogram(
            "processor_duration_seconds", "Time a processor spent on one batch.",
            ["processor"], buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.dropped_spans = Counter(
            "dropped_spans", "Every span dropped anywhere in tracepipe, by reason (sum over components).",
            ["reason"], namespace=ns, registry=r,
        )
        # --- sinks -----------------------------------------------------------------
        self.sink_sent_spans = Counter(
            "sink_sent_spans", "Spans a sink stored and acknowledged.", ["sink"], namespace=ns, registry=r,
        )
        self.sink_send_failed_spans = Counter(
            "sink_send_failed_spans", "Spans in batches a sink failed to store (each failed attempt).",
            ["sink"], namespace=ns, registry=r,
        )
        self.sink_write_duration = Histogram(
            "sink_write_duration_seconds", "Time a sink took to store one batch.",
            ["sink"], buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.sink_retries = Counter(
            "sink_retries", "Batch writes a sink retried after a failure.", ["sink"], namespace=ns, registry=r,
        )
        self.dead_letter_spans = Counter(
            "dead_letter_spans", "Spans a sink (or processor) refused for good, kept in the dead-letter store, "
            "by component and reason.", ["sink", "reason"], namespace=ns, registry=r,
        )
        # --- chain -----------------------------------------------------------------
        self.batch_duration = Histogram(
            "batch_duration_seconds", "Time from taking a batch off the transport to every sink's ack.",
            ["pipeline"], buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.batch_spans = Histogram(
            "batch_spans", "Spans per batch taken off the transport.",
            ["pipeline"], buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
            namespace=ns, registry=r,
        )
        self.decode_duration = Histogram(
            "decode_duration_seconds", "Time the worker spent turning one batch's OTLP requests into spans.",
            buckets=INTERNAL_BUCKETS, namespace=ns, registry=r,
        )
        self.pipeline_spans = Counter(
            "pipeline_spans", "Spans that completed a pipeline (every sink acknowledged).",
            ["pipeline"], namespace=ns, registry=r,
        )
        # --- LLM / span metrics (written by the prometheus sink) -------------------
        self.spans = Counter(
            "spans", "Spans seen by the prometheus sink, by service, model, operation and status.",
            ["service", "model", "operation", "status"], namespace=ns, registry=r,
        )
        self.span_duration = Histogram(
            "span_duration_seconds", "Span duration by service, model and operation.",
            ["service", "model", "operation"], buckets=SPAN_DURATION_BUCKETS, namespace=ns, registry=r,
        )
        self.llm_calls = Counter(
            "llm_calls", "GenAI calls (spans carrying a model), by status.",
            ["service", "provider", "model", "operation", "status"], namespace=ns, registry=r,
        )
        self.llm_cost = Counter(
            "llm_cost_usd", "Spend in USD of GenAI calls.",
            ["service", "provider", "model", "operation"], namespace=ns, registry=r,
        )
        self.llm_tokens = Counter(
            "llm_tokens", "Tokens of GenAI calls by type (input, output, cache_read, cache_creation).",
            ["service", "provider", "model", "operation", "type"], namespace=ns, registry=r,
        )
        self.llm_unpriced_spans = Counter(
            "llm_unpriced_spans", "GenAI spans the cost processor could not price (unknown model).",
            ["model"], namespace=ns, registry=r,
        )
        # --- redact / sample (processors/redact.py, processors/sample.py) -----------
        self.redactions = Counter(
            "redactions", "Secrets and PII a redact processor found, by type (values are never logged).",
            ["processor", "type"], namespace=ns, registry=r,
        )
        self.sampling_traces = Counter(
            "sampling_traces", "Traces a sample processor decided, by decision (kept, dropped) and deciding policy.",
            ["processor", "decision", "policy"], namespace=ns, registry=r,
        )
        self.sampling_spans = Counter(
            "sampling_spans", "Spans a sample processor decided, by decision (kept, dropped) and deciding policy.",
            ["processor", "decision", "policy"], namespace=ns, registry=r,
        )
        self.sampling_early_decisions = Counter(
            "sampling_early_decisions", "Traces a tail sampler decided before their decision wait (buffer full).",
            ["processor"], namespace=ns, registry=r,
        )
        self.sampling_buffered_traces = Gauge(
            "sampling_buffered_traces", "Traces a tail sampler holds waiting for a decision.",
            ["processor"], namespace=ns, registry=r,
        )
        self.sampling_buffered_spans = Gauge(
            "sampling_buffered_spans", "Spans a tail sampler holds waiting for a decision.",
            ["processor"], namespace=ns, registry=r,
        )

        # --- context (processors/context.py) ----------------------------------------
        self.context_spans_without_root = Counter(
            "context_spans_without_root", "Spans a context processor released before their trace's root arrived.",
            ["processor"], namespace=ns, registry=r,
        )
        self.context_early_releases = Counter(
            "context_early_releases", "Traces a context processor released before their wait (buffer full).",
            ["processor"], namespace=ns, registry=r,
        )
        self.context_buffered_traces = Gauge(
            "context_buffered_traces", "Traces a context processor holds waiting for their root span.",
            ["processor"], namespace=ns, registry=r,
        )
        self.context_buffered_spans = Gauge(
            "context_buffered_spans", "Spans a context processor holds waiting for their trace's root span.",
            ["processor"], namespace=ns, registry=r,
        )

        # --- budgets (sinks/budgets.py; ids never become labels) --------------------
        self.budget_utilization_ratio = Gauge(
            "budget_utilization_ratio",
            "Spend/limit of the rank-th highest id of a budget in its current period (top-N, no ids).",
            ["budget", "rank"], namespace=ns, registry=r,
        )
        self.budget_exceeded_ids = Gauge(
            "budget_exceeded_ids", "Ids at or over their limit in a budget's current period (seen by this process).",
            ["budget"], namespace=ns, registry=r,
        )
        self.budget_threshold_crossings = Counter(
            "budget_threshold_crossings", "Budget thresholds crossed (once per id, period and threshold).",
            ["budget", "threshold"], namespace=ns, registry=r,
        )
        self.budget_batches = Counter(
            "budget_batches", "Batches a budgets sink handled, by outcome (applied, duplicate, buffered, rejected).",
            ["sink", "outcome"], namespace=ns, registry=r,
        )
        self.budget_buffered_batches = Gauge(
            "budget_buffered_batches", "Batches of increments waiting for an unreachable budget store.",
            ["sink"], namespace=ns, registry=r,
        )

        # --- anomaly windows and alerts (processors/anomaly.py, pipeline/alerts) ---------
        self.anomaly_unwindowed_spans = Counter(
            "anomaly_unwindowed_spans",
            "Spans an anomaly processor passed on without windowing them (late, future) or folded into its "
            "'other' key (key_overflow).",
            ["processor", "reason"], namespace=ns, registry=r,
        )
        self.anomaly_keys = Gauge(
            "anomaly_keys", "Keys an anomaly processor tracks (windows and baselines).",
            ["processor"], namespace=ns, registry=r,
        )
        self.anomaly_windows_evaluated = Counter(
            "anomaly_windows_evaluated", "Closed (key, window) pairs an anomaly processor checked against its rules.",
            ["processor"], namespace=ns, registry=r,
        )
        self.anomaly_alerts_suppressed = Counter(
            "anomaly_alerts_suppressed", "Alert firings held back (reason: cooldown).",
            ["rule", "reason"], namespace=ns, registry=r,
        )
        self.alerts_active = Gauge(
            "alerts_active", "1 per active alert (alert = fingerprint of processor, rule and key; see /api/alerts).",
            ["rule", "severity", "alert"], namespace=ns, registry=r,
        )
        self.alerts = Counter(
            "alerts", "Alert events published, by rule, severity and state (firing, resolved).",
            ["rule", "severity", "state"], namespace=ns, registry=r,
        )
        self.alert_events_dropped = Counter(
            "alert_events_dropped",
            "Alert events dropped because a bounded alert queue was full (stage: router, or a notifier id).",
            ["stage"], namespace=ns, registry=r,
        )
        self.alert_notifications = Counter(
            "alert_notifications",
            "Alert notification attempts by notifier and outcome (delivered, retry, failed, rejected, filtered).",
            ["notifier", "outcome"], namespace=ns, registry=r,
        )

    def count_drop(self, component: str, reason: str, n: int, *, processor: bool = True) -> None:
        """Record `n` dropped spans against the component and the global drop counter."""
        if n <= 0:
            return
        if processor:
            self.processor_dropped_spans.labels(component, reason).inc(n)
        self.dropped_spans.labels(reason).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

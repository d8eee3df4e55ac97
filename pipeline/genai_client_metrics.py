"""The OTel GenAI client metrics received over OTLP, re-exposed on /metrics.

Instrumentations such as `opentelemetry-instrumentation-openai-v2` record two histograms:
`gen_ai.client.token.usage` (tokens per call, by `gen_ai.token.type` input/output) and
`gen_ai.client.operation.duration` (seconds per call). tracepipe re-exposes them as
Prometheus histograms, summed over the exporting processes:

    tracepipe_genai_client_token_usage_tokens{service,provider,model,operation,type}
    tracepipe_genai_client_operation_duration_seconds{service,provider,model,operation}

with the buckets the instrumentation chose (the explicit bounds of the OTLP histogram).
Labels are low-cardinality and capped like every tracepipe label (LabelGuard: at most 200
values each, the rest folded into `other`); the model is the response model when present,
else the request model.

How points are summed: every OTLP data point belongs to a stream (resource, scope, metric,
point attributes). A cumulative point replaces its stream's previous value (a new start time
means the process restarted: the old stream's last value is kept, so the exposed counts stay
monotonic); a delta point is added. At most `max_streams` streams are tracked; points of
further streams, and points whose bucket bounds differ from the bounds already exposed for
the same label set, are skipped and counted in
`tracepipe_genai_client_metric_points_skipped_total{reason}` (reasons `too_many_streams`,
`bucket_mismatch`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from pipeline.otlp.decode import attributes

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
EXPOSED = {
    TOKEN_USAGE: (
        "tracepipe_genai_client_token_usage_tokens",
        "Tokens per GenAI call as reported by the instrumentation's gen_ai.client.token.usage metric.",
        ("service", "provider", "model", "operation", "type"),
    ),
    OPERATION_DURATION: (
        "tracepipe_genai_client_operation_duration_seconds",
        "GenAI call durations as reported by the instrumentation's gen_ai.client.operation.duration metric.",
        ("service", "provider", "model", "operation"),
    ),
}
MAX_STREAMS = 10_000


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    def add(self, counts: list[int], total: float, sign: int = 1) -> None:
        for i, c in enumerate(counts):
            self.counts[i] += sign * c
        self.total += sign * total


@dataclass
class _Stream:
    series: tuple[str, tuple[str, ...]]  # (metric, label values)
    start_ns: int
    counts: list[int]
    total: float


@dataclass
class _State:
    series: dict[tuple[str, tuple[str, ...]], _Hist] = field(default_factory=dict)
    streams: dict[tuple[Any, ...], _Stream] = field(default_factory=dict)


def _frozen(attrs: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in attrs.items()))


class GenAiClientMetrics(Collector):
    """Accumulates the GenAI client histograms of OTLP metric requests (module doc)."""

    def __init__(self, guard: Any, skipped: Any, max_streams: int = MAX_STREAMS) -> None:
        self.guard = guard
        self.skipped = skipped
        self.max_streams = max_streams
        self._state = _State()
        self._lock = threading.Lock()

    def _labels(self, metric: str, service: str, attrs: dict[str, Any]) -> tuple[str, ...]:
        g = self.guard
        model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
        provider = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
        values = [
            g("service", service),
            g("provider", str(provider) if provider else None),
            g("model", str(model) if model else None),
            g("operation", str(attrs["gen_ai.operation.name"]) if attrs.get("gen_ai.operation.name") else None),
        ]
        if metric == TOKEN_USAGE:
            values.append(g("type", str(attrs["gen_ai.token.type"]) if attrs.get("gen_ai.token.type") else None))
        return tuple(values)

    def observe(self, req: ExportMetricsServiceRequest) -> int:
        """Fold the GenAI client histograms of `req` in; returns the points taken."""
        taken = 0
        for rm in req.resource_metrics:
            resource: dict[str, Any] | None = None
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name not in EXPOSED or m.WhichOneof("data") != "histogram":
                        continue
                    if resource is None:
                        resource = attributes(rm.resource.attributes)
                    svc = resource.get("service.name")
                    service = svc if isinstance(svc, str) and svc else "unknown_service"
                    delta = m.histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
                    res_key = _frozen(resource)
                    for p in m.histogram.data_points:
                        attrs = attributes(p.attributes)
                        series = (m.name, self._labels(m.name, service, attrs))
                        stream = (res_key, sm.scope.name, m.name, _frozen(attrs))
                        if self._fold(series, stream, p, delta):
                            taken += 1
        return taken

    def _fold(self, series: tuple[str, tuple[str, ...]], stream_key: tuple[Any, ...], p: Any, delta: bool) -> bool:
        bounds = tuple(p.explicit_bounds)
        counts = list(p.bucket_counts)
        if len(counts) != len(bounds) + 1:
            counts = (counts + [0] * (len(bounds) + 1))[: len(bounds) + 1]
        with self._lock:
            st = self._state
            hist = st.series.get(series)
            if hist is None:
                hist = st.series[series] = _Hist(bounds, [0] * (len(bounds) + 1))
            elif hist.bounds != bounds:
                self.skipped.labels("bucket_mismatch").inc()
                return False
            if delta:
                hist.add(counts, p.sum)
                return True
            prev = st.streams.get(stream_key)
            if prev is None:
                if len(st.streams) >= self.max_streams:
                    self.skipped.labels("too_many_streams").inc()
                    return False
                st.streams[stream_key] = _Stream(series, p.start_time_unix_nano, counts, p.sum)
                hist.add(counts, p.sum)
                return True
            if prev.start_ns == p.start_time_unix_nano and all(
                c >= o for c, o in zip(counts, prev.counts, strict=False)
            ):
                hist.add(counts, p.sum)
                hist.add(prev.counts, prev.total, -1)
            else:  # the stream restarted: its previous value stays in the series
                hist.add(counts, p.sum)
            prev.start_ns, prev.counts, prev.total = p.start_time_unix_nano, counts, p.sum
            return True

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            snapshot = [(k, _Hist(h.bounds, list(h.counts), h.total)) for k, h in self._state.series.items()]
        for metric, (name, doc, labels) in EXPOSED.items():
            fam = HistogramMetricFamily(name, doc, labels=list(labels))
            for (m, values), hist in snapshot:
                if m != metric:
                    continue
                buckets: list[tuple[str, float]] = []
                running = 0
                for bound, c in zip(hist.bounds, hist.counts, strict=False):
                    running += c
                    buckets.append((_le(bound), float(running)))
                running += hist.counts[-1]
                buckets.append(("+Inf", float(running)))
                fam.add_metric(list(values), buckets, hist.total)
            yield fam


def _le(bound: float) -> str:
    return repr(float(bound))

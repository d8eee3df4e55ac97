"""Prometheus metrics of the quality processor and its score writer, on the process's Telemetry registry."""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NS = "tracepipe"


@dataclass
class QualityMetrics:
    spans: Counter
    scores: Counter
    similarity: Histogram
    pending: Gauge
    score_rows_dropped: Counter  # pipeline/quality/score_writer.py


_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, QualityMetrics] = WeakKeyDictionary()


def quality_metrics(registry: CollectorRegistry) -> QualityMetrics:
    """The metrics, registered once per registry."""
    m = _BY_REGISTRY.get(registry)
    if m is None:
        m = QualityMetrics(
            spans=Counter(
                "quality_spans",
                "GenAI spans the quality processor looked at, by result "
                "(baseline, exact, changed, no_content, prompt_overflow).",
                ["processor", "result"],
                namespace=NS,
                registry=registry,
            ),
            scores=Counter(
                "quality_scores",
                "Similarity scoring outcomes (scored, queue_full, no_baseline, error).",
                ["processor", "outcome"],
                namespace=NS,
                registry=registry,
            ),
            similarity=Histogram(
                "quality_similarity_ratio",
                "Semantic similarity of sampled answers to their baseline [0, 1].",
                ["processor"],
                namespace=NS,
                registry=registry,
                buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            ),
            pending=Gauge(
                "quality_pending_scores",
                "Answers queued for embedding in the background pool.",
                ["processor"],
                namespace=NS,
                registry=registry,
            ),
            score_rows_dropped=Counter(
                "quality_score_rows_dropped",
                "quality.similarity score rows never written to the scores table (reason: queue_full = the "
                "writer's buffer was full; insert_failed = still unwritten when the last write at shutdown failed).",
                ["reason"],
                namespace=NS,
                registry=registry,
            ),
        )
        _BY_REGISTRY[registry] = m
    return m

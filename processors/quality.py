"""quality processor: exact-match and semantic-similarity monitoring of LLM answers.

What it does: for each GenAI span with prompt and answer text (pipeline/quality/fingerprint.py)
it computes a prompt fingerprint (normalised input messages, keyed by the prompt template and
version attributes when present) and a response fingerprint, and compares the answer with the
baseline of that prompt: the first `baseline_size` distinct answers seen for it. On the span:
`quality.prompt_fingerprint`, `quality.response_fingerprint`, `quality.baseline` (this answer
started or joined the baseline), `quality.exact_match` (the answer equals a baseline answer),
and `quality.similarity` = 1.0 for an exact match.

Semantic similarity of a changed answer needs the embedding model (pipeline/quality/embedder.py),
which is far slower than the chain, so it runs OFF the hot path: a sample (`sample_rate`,
decided from the trace id, so all spans of a trace agree) is queued to a bounded background
pool (`workers` threads, at most `max_pending` queued; when full the answer is not scored and
`tracepipe_quality_scores_total{outcome="queue_full"}` counts it). Spans are never held back:
a span leaves the processor at once, so its similarity does NOT land on the span (except the
exact-match 1.0); it lands on the quality metrics at a later `process()` call (the runner
calls it when idle too), in the `tracepipe_quality_similarity_ratio` histogram, in
`stats()`, and as a `quality.similarity` score row (source `quality`) on the span's trace, next to
the scores users and evaluators post (pipeline/quality/score_writer.py; written when the runtime
has a ClickHouse query sink).

Quality metrics feed rules evaluated with the anomaly rule engine (pipeline/anomaly/rules.py
and its EWMA baselines): per key (`group_by`, default service and model) every `window`
consecutive sampled results form a window with `similarity_mean` (mean similarity, exact
matches counting 1.0) and `changed_answer_rate` (share of answers not equal to a baseline
answer). Windows count results, not seconds: a sampled signal arrives late and unevenly, and
a count window always holds enough samples to judge. A rule fires once (`firing`) after
`for_windows` bad windows and resolves after `resolve_windows` good ones; events have the
anomaly processor's shape (type "anomaly", rule, metric, key, observed, threshold, summary; both
built by pipeline/anomaly/events.py) and leave through the same `ctx.emit_event("anomaly", ...)`
path to the alert sinks.

State (`ctx.state.table("quality/<id>")`, JSON values, written back once per batch): one value
per prompt fingerprint (`p:<fp>`: baseline hashes and their embeddings, bounded by
`baseline_size`; at most `max_prompts` prompts, new ones past that are not tracked) and one per
key (`k:<key>`: the open window, rule states, baselines). The background threads never touch
the table: their results are applied by `process()`, as a Faust table requires; results applied
on an idle tick (empty batch, outside stream iteration) are written with the next batch. In
distributed mode each worker keeps the baselines of the prompts its partitions carried, and its
quality windows count the results of those partitions (tests/test_quality_distributed.py); unlike
the anomaly processor's windows they are not merged fleet-wide, so a rule's `window` counts per
worker: with several workers, set it per the share of traffic one worker sees.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.anomaly import baseline as bl
from pipeline.anomaly.config import BaselineConfig
from pipeline.anomaly.events import EVENT_KIND, alert_event, fingerprint, iso, summary
from pipeline.anomaly.rules import judge
from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.quality.embedder import Embedder, missing_packages, similarity
from pipeline.quality.fingerprint import digest, normalise, prompt_fingerprint, prompt_messages, response_text
from pipeline.quality.metrics import quality_metrics
from pipeline.query.scores import Score
from pipeline.semconv import model_of
from pipeline.spans import Span, SpanBatch
from pipeline.tenants import DEFAULT_TENANT, TENANT_ATTRIBUTE

SCORE_NAME = "quality.similarity"  # the score row each applied result writes (source: quality)
SEP = "\x1f"
QualityMetric = Literal["similarity_mean", "changed_answer_rate"]
KeyDimension = Literal["service", "model", "operation", "provider", "feature"]
_ATTRIBUTE_OF = {
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "feature": "app.feature",
}
EMBED_BATCH = 32  # answers per forward pass of the model (batching ~1.6x the rate of one at a time)
# rule state: [active, hit_streak, ok_streak]
R_ACTIVE, R_HITS, R_OKS = range(3)


class QualityRuleConfig(ComponentConfig):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="Rule name (alert name).")
    metric: QualityMetric = Field(..., description="similarity_mean or changed_answer_rate of a window.")
    kind: Literal["absolute", "relative", "zscore"] = Field(
        "absolute", description="As the anomaly processor's rules: the value, change vs baseline, or z-score."
    )
    threshold: float = Field(..., description="Value, relative change or z-score.")
    direction: Literal["above", "below"] = Field("below", description="Fire above or below the threshold.")
    min_calls: int = Field(10, ge=0, description="Results a window needs before this rule can judge it.")
    min_baseline: float = Field(
        0.0, ge=0, description="relative rules: no verdict while the baseline mean is at or below this."
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    for_windows: int = Field(1, ge=1, description="Consecutive bad windows before firing.")
    resolve_windows: int = Field(1, ge=1, description="Consecutive good windows before resolving.")


def _default_rules() -> list[QualityRuleConfig]:
    return [QualityRuleConfig(name="quality_drop", metric="similarity_mean", threshold=0.6, direction="below")]


class QualityConfig(ComponentConfig):
    sample_rate: float = Field(0.1, ge=0, le=1, description="Share of traces whose answers are scored by the model.")
    workers: int = Field(1, ge=1, le=16, description="Background threads computing embeddings.")
    model_threads: int = Field(1, ge=1, le=64, description="Torch intra-op threads of the model.")
    max_pending: int = Field(1000, ge=1, description="Answers queued for embedding at most; more are not scored.")
    baseline_size: int = Field(3, ge=1, le=32, description="Distinct answers per prompt kept as its baseline.")
    max_prompts: int = Field(
        10_000, ge=1, description="Prompt fingerprints tracked at most (state: ~3.5 KB per prompt at baseline_size 3)."
    )
    prompt_keys: list[str] = Field(
        default_factory=lambda: ["gen_ai.prompt.name", "gen_ai.prompt.version"],
        description="Span attributes (prompt template, version) that key the prompt fingerprint when present.",
    )
    max_chars: int = Field(2000, ge=1, description="Answer characters embedded at most (MiniLM reads 256 tokens).")
    group_by: list[KeyDimension] = Field(
        default_factory=lambda: ["service", "model"], min_length=1, description="Key of the quality windows."
    )
    window: int = Field(20, ge=1, description="Sampled results per key that form one quality window.")
    baseline_windows: int = Field(
        30, ge=1, description="Windows the EWMA baseline of relative/zscore rules mostly reflects."
    )
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig,
        description="warmup_windows, min_std_ratio, freeze_during_alert (horizon unused).",
    )
    rules: list[QualityRuleConfig] = Field(default_factory=_default_rules, description="Quality alert rules.")

    @model_validator(mode="after")
    def _model_installed(self) -> QualityConfig:
        if self.sample_rate > 0 and (missing := missing_packages()):
            raise ValueError(
                f"sample_rate > 0 needs the embedding model, and {', '.join(missing)} is not installed: "
                "pip install 'tracepipe[quality]' (or set sample_rate: 0 for exact-match monitoring only)"
            )
        return self


def pack(vector: np.ndarray) -> str:
    """An embedding as state data: float16 bytes in base64 (1 KB for 384 dimensions)."""
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def _sampled(trace_id: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    try:
        return int(trace_id[-8:], 16) / 0xFFFFFFFF < rate
    except ValueError:
        return int(hashlib.blake2b(trace_id.encode(), digest_size=4).hexdigest(), 16) / 0xFFFFFFFF < rate


def _getter(dim: str) -> Callable[[Span], str]:
    if dim == "service":
        return lambda s: str(s.resource.attributes.get("service.name") or "unknown_service")
    if dim == "model":
        return lambda s: str(model_of(s.attributes) or "")
    attr = _ATTRIBUTE_OF[dim]
    return lambda s: str(s.attributes.get(attr) or "")


class _Job:
    __slots__ = ("changed", "fp", "key", "rh", "span_id", "tenant", "texts", "trace_id")

    def __init__(self, fp: str, rh: str, key: str, tenant: str, trace_id: str, span_id: str, changed: bool) -> None:
        self.fp, self.rh, self.key, self.tenant = fp, rh, key, tenant
        self.trace_id, self.span_id, self.changed = trace_id, span_id, changed
        self.texts: dict[str, str] = {}  # response hash -> text to embed


class QualityProcessor(BaseProcessor):
    def __init__(
        self,
        component_id: str,
        config: QualityConfig,
        ctx: ComponentContext,
        *,
        embedder: Embedder | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self.clock = clock or time.time
        self.table = ctx.state.table(f"quality/{component_id}")
        self.embedder = embedder or Embedder(threads=config.model_threads, max_chars=config.max_chars)
        self._getters = [_getter(d) for d in config.group_by]
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix=f"quality-{component_id}")
        self._done: deque[tuple[_Job, dict[str, str] | None, float | None]] = deque()
        self._inflight = 0  # queued + being embedded
        self._queue: deque[tuple[_Job, list[str], dict[str, str]]] = deque()
        self._draining = 0  # pool threads running _drain
        self._cv = threading.Condition()
        self._texts: dict[str, str] = {}  # baseline answers not yet embedded (this process only), bounded
        self._n_prompts: int | None = None
        self._pending: dict[str, Any] = {}  # state written on idle ticks, stored with the next batch
        self.recent: deque[dict[str, Any]] = deque(maxlen=1000)  # last scores, for stats() and the API
        m = quality_metrics(ctx.telemetry.registry)
        self._m_spans = {
            r: m.spans.labels(component_id, r)
            for r in ("baseline", "exact", "changed", "no_content", "prompt_overflow")
        }
        self._m_scores = {o: m.scores.labels(component_id, o) for o in ("scored", "queue_full", "no_baseline", "error")}
        self._m_sim = m.similarity.labels(component_id)
        self._m_pending = m.pending.labels(component_id)
        self.alpha = 2.0 / (config.baseline_windows + 1.0)

    # --- hot path ------------------------------------------------------------------------

    def _key(self, s: Span) -> tuple[str, str]:
        t = s.resource.attributes.get(TENANT_ATTRIBUTE)
        tenant = t if t.__class__ is str and t else DEFAULT_TENANT
        return tenant, SEP.join(g(s) for g in self._getters)

    def process(self, batch: SpanBatch) -> SpanBatch:
        dirty: dict[str, Any] = {}
        if self._n_prompts is None:
            self._n_prompts = sum(1 for k in self.table if k.startswith("p:"))
        for s in batch.spans:
            a = s.attributes
            if "gen_ai.input.messages" not in a and "gen_ai.prompt.0.content" not in a and "input.value" not in a:
                continue
            msgs = prompt_messages(a)
            answer = response_text(a)
            if not msgs or answer is None:
                self._m_spans["no_content"].inc()
                continue
            keys = [str(a[k]) for k in self.config.prompt_keys if k in a]
            fp = prompt_fingerprint(msgs, keys)
            rh = digest(normalise(answer))
            a["quality.prompt_fingerprint"] = fp
            a["quality.response_fingerprint"] = rh
            self._observe(s, fp, rh, answer, dirty)
        self._apply_results(dirty)
        if not batch.spans:
            # An idle tick: a Faust table takes writes only inside stream iteration, so results
            # applied now are written with the next batch (and read from _pending until then).
            self._pending.update(dirty)
            return batch
        if self._pending:
            dirty = {**self._pending, **dirty}
            self._pending = {}
        for k, v in dirty.items():
            self.table[k] = v
        return batch

    def _get(self, key: str, dirty: dict[str, Any]) -> Any:
        return dirty.get(key) or self._pending.get(key) or self.table.get(key)

    def _observe(self, s: Span, fp: str, rh: str, answer: str, dirty: dict[str, Any]) -> None:
        pk = "p:" + fp
        entry = self._get(pk, dirty)
        a = s.attributes
        if entry is None:
            if (self._n_prompts or 0) >= self.config.max_prompts:
                self._m_spans["prompt_overflow"].inc()
                return
            self._n_prompts = (self._n_prompts or 0) + 1
            entry = {"h": [rh], "e": {}}
            dirty[pk] = entry
            self._remember(rh, answer)
            a["quality.baseline"] = True
            self._m_spans["baseline"].inc()
            return
        hashes: list[str] = entry["h"]
        if rh in hashes:
            a["quality.exact_match"] = True
            a["quality.similarity"] = 1.0
            self._m_spans["exact"].inc()
            if _sampled(s.trace_id, self.config.sample_rate):
                tenant, key = self._key(s)
                self._done.append((_Job(fp, rh, key, tenant, s.trace_id, s.span_id, False), None, 1.0))
            return
        a["quality.exact_match"] = False
        self._m_spans["changed"].inc()
        if len(hashes) < self.config.baseline_size:
            entry = {"h": [*hashes, rh], "e": dict(entry["e"])}
            dirty[pk] = entry
            self._remember(rh, answer)
            a["quality.baseline"] = True
        if not _sampled(s.trace_id, self.config.sample_rate):
            return
        tenant, key = self._key(s)
        job = _Job(fp, rh, key, tenant, s.trace_id, s.span_id, True)
        for h in hashes:
            if h not in entry["e"] and h in self._texts:
                job.texts[h] = self._texts[h]
        if not entry["e"] and not job.texts:
            self._m_scores["no_baseline"].inc()  # baseline answers seen before a restart, never embedded
            return
        job.texts[rh] = answer
        with self._cv:
            if self._inflight >= self.config.max_pending:
                self._m_scores["queue_full"].inc()
                return
            self._inflight += 1
            self._queue.append((job, [h for h in hashes if h in entry["e"]], entry["e"]))
            start = self._draining < self.config.workers
            if start:
                self._draining += 1
        self._m_pending.inc()
        if start:
            self._pool.submit(self._drain)

    def _remember(self, rh: str, answer: str) -> None:
        if len(self._texts) >= 4 * self.config.max_pending:
            self._texts.pop(next(iter(self._texts)))
        self._texts[rh] = answer

    # --- background pool -------------------------------------------------------------------

    def _drain(self) -> None:
        """A pool thread: embed queued answers, up to `EMBED_BATCH` jobs per forward pass."""
        while True:
            with self._cv:
                if not self._queue:
                    self._draining -= 1
                    return
                jobs = [self._queue.popleft() for _ in range(min(EMBED_BATCH, len(self._queue)))]
            try:
                results = self._score(jobs)
            except BaseException:
                results = [(job, None, None) for job, _, _ in jobs]
            with self._cv:
                self._done.extend(results)
                self._inflight -= len(jobs)
                self._cv.notify_all()
            self._m_pending.dec(len(jobs))

    def _score(self, jobs: list[tuple[_Job, list[str], dict[str, str]]]) -> list[Any]:
        texts: list[str] = []
        for job, _, _ in jobs:
            texts.extend(job.texts.values())
        try:
            vecs = self.embedder.embed(texts)
        except Exception:  # a model failure loses these scores only
            self.ctx.logger.exception("quality: embedding failed")
            return [(job, None, None) for job, _, _ in jobs]
        out: list[Any] = []
        i = 0
        for job, known, embeddings in jobs:
            new = {h: vecs[i + k] for k, h in enumerate(job.texts)}
            i += len(job.texts)
            try:
                answer = new[job.rh]  # kept: an answer that joined the baseline is stored with it
                base = [unpack(embeddings[h]) for h in known] + [v for h, v in new.items() if h != job.rh]
                sim = max(similarity(answer, b) for b in base)
                out.append((job, {h: pack(v) for h, v in new.items()}, sim))
            except Exception:  # e.g. a corrupt stored embedding: this score only
                self.ctx.logger.exception("quality: scoring failed")
                out.append((job, None, None))
        return out

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued answer is scored (results are applied by the next process())."""
        with self._cv:
            return self._cv.wait_for(lambda: self._inflight == 0, timeout)

    # --- results -> windows -> rules ---------------------------------------------------------

    def _apply_results(self, dirty: dict[str, Any]) -> None:
        while self._done:
            job, new_embeddings, sim = self._done.popleft()
            if sim is None:
                self._m_scores["error"].inc()
                continue
            if new_embeddings:
                pk = "p:" + job.fp
                entry = self._get(pk, dirty)
                if entry is not None:
                    emb = dict(entry["e"])
                    for h, v in new_embeddings.items():
                        if h in entry["h"]:
                            emb[h] = v
                            self._texts.pop(h, None)
                    dirty[pk] = {"h": entry["h"], "e": emb}
            if job.changed:
                self._m_scores["scored"].inc()
                self._m_sim.observe(sim)
            self.recent.append(
                {"trace_id": job.trace_id, "span_id": job.span_id, "similarity": sim, "exact_match": not job.changed}
            )
            self._record_score(job, sim)
            self._add_to_window(job, sim, dirty)

    def _record_score(self, job: _Job, sim: float) -> None:
        """The result as a `quality.similarity` score row on its span (pipeline/quality/score_writer.py)."""
        writer = self.ctx.services.quality_scores
        if writer is None:
            return
        comment = "exact match with the baseline" if not job.changed else "changed answer vs the baseline"
        writer.record(Score(job.trace_id, job.span_id, SCORE_NAME, "numeric", round(float(sim), 6), "", comment,
                            "quality"), job.tenant)

    def _add_to_window(self, job: _Job, sim: float, dirty: dict[str, Any]) -> None:
        ks = job.key if job.tenant == DEFAULT_TENANT else f"{job.tenant}\x1e{job.key}"
        kk = "k:" + ks
        st = self._get(kk, dirty)
        st = (
            {"w": [0.0, 0, 0], "r": {}, "b": {}, "n": 0}
            if st is None
            else {"w": list(st["w"]), "r": {k: list(v) for k, v in st["r"].items()}, "b": dict(st["b"]), "n": st["n"]}
        )
        w = st["w"]
        w[0] += sim
        w[1] += 1
        w[2] += 1 if job.changed else 0
        if w[1] >= self.config.window:
            self._evaluate(job.tenant, job.key, st)
            st["w"] = [0.0, 0, 0]
            st["n"] += 1
        dirty[kk] = st

    def _evaluate(self, tenant: str, key: str, st: dict[str, Any]) -> None:
        total, n, changed = st["w"]
        values = {"similarity_mean": total / n, "changed_answer_rate": changed / n}
        active: set[str] = set()
        for rule in self.config.rules:
            value = values[rule.metric]
            base = st["b"].get(rule.metric)
            verdict = judge(rule, value, n, base, self.config.baseline)  # type: ignore[arg-type]
            rs = st["r"].setdefault(rule.name, [0, 0, 0])
            if verdict.hit:
                rs[R_HITS] += 1
                rs[R_OKS] = 0
                if not rs[R_ACTIVE] and rs[R_HITS] >= rule.for_windows:
                    rs[R_ACTIVE] = 1
                    self._send("firing", rule, tenant, key, st["n"], value, verdict.threshold, n)
            else:
                rs[R_HITS] = 0
                rs[R_OKS] += 1
                if rs[R_ACTIVE] and rs[R_OKS] >= rule.resolve_windows:
                    rs[R_ACTIVE] = 0
                    self._send("resolved", rule, tenant, key, st["n"], value, verdict.threshold, n)
            if rs[R_ACTIVE]:
                active.add(rule.metric)
        for metric, x in values.items():
            if not (self.config.baseline.freeze_during_alert and metric in active):
                st["b"][metric] = bl.update(st["b"].get(metric), x, self.alpha)

    def _send(
        self,
        state: str,
        rule: QualityRuleConfig,
        tenant: str,
        key: str,
        window_no: int,
        value: float,
        threshold: float | None,
        n: int,
    ) -> None:
        dims = dict(zip(self.config.group_by, key.split(SEP), strict=False))
        now = int(self.clock() * 1e9)
        event = alert_event(
            state,
            rule,
            processor=self.component_id,
            fingerprint=fingerprint(self.component_id, rule.name, tenant, key),
            at=window_no,
            key=dims,
            tenant=tenant,
            window={"results": n, "index": window_no, "end": iso(now), "end_ns": now},
            observed=value,
            baseline=None,
            threshold=threshold,
            detail="",
            calls=n,
            example_trace_ids=[r["trace_id"] for r in list(self.recent)[-5:] if r["similarity"] < 1.0][:5],
            summary=summary(state, rule, dims, f"{value:.3g}", threshold, f"last {n} scored answers",
                            title="Quality Drop Detected: "),
            emitted_at=iso(now),
        )
        if self.ctx.emit_event is not None:
            self.ctx.emit_event(EVENT_KIND, event)

    def stats(self) -> dict[str, Any]:
        with self._cv:
            pending = self._inflight
        return {"pending": pending, "prompts": self._n_prompts or 0, "recent": list(self.recent)[-20:]}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create(component_id: str, config: QualityConfig, ctx: ComponentContext) -> QualityProcessor:
    return QualityProcessor(component_id, config, ctx)


factory = Factory(
    "quality",
    QualityConfig,
    create,
    "Answer quality: prompt/response fingerprints, exact match vs baseline, sampled semantic similarity "
    "(local MiniLM, background pool) and quality_drop rules.",
)

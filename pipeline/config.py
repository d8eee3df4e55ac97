"""Configuration: YAML -> validated models, as a whole, before anything starts.

The layout follows the OpenTelemetry Collector: components are declared by id
(`type[/name]`) under `receivers`, `processors` and `sinks`, and `service.pipelines`
wires them. `${VAR}` and `${VAR:-default}` in string values are replaced from the
environment. Every error names its YAML path (`processors.cost/strict.overrides[0]...`)
and all errors are reported together: a bad config never half-starts a pipeline.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.alerts.config import AlertsConfig
from pipeline.audit import AuditConfig
from pipeline.auth.config import AuthConfig, TokenEntry
from pipeline.component import ComponentConfig, Factory, split_component_id
from pipeline.server_config import ServerConfig

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")
DEFAULT_DATA_DIR = "./tracepipe-data"

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """One or more configuration errors, each prefixed with its YAML path."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {e}" for e in errors))


def format_loc(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """('service', 'pipelines', 'traces', 'processors', 2) -> service.pipelines.traces.processors[2]"""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def validation_messages(err: ValidationError, prefix: str = "") -> list[str]:
    messages = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown option"
        messages.append(f"{format_loc(loc, prefix)}: {msg}")
    return messages


def parse_endpoint(value: str) -> tuple[str, int]:
    """'127.0.0.1:4317' -> ('127.0.0.1', 4317); '[::1]:4317' -> ('::1', 4317)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port_i = int(port)
    if not 0 <= port_i <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, port_i


def _check_endpoint(value: str) -> str:
    parse_endpoint(value)
    return value


# --- environment substitution ------------------------------------------------------


def substitute_env(value: Any, env: Mapping[str, str], path: str = "", errors: list[str] | None = None) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of a loaded YAML tree."""
    errors = errors if errors is not None else []
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            errors.append(f"{path or '(root)'}: environment variable {name} is not set and has no default")
            return ""

        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


# --- receivers, transport, service -------------------------------------------------


class OtlpGrpcConfig(ServerConfig):
    endpoint: str = Field("127.0.0.1:4317", description="HOST:PORT to listen on for OTLP/gRPC.")
    max_recv_message_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest request accepted.")

    _v = field_validator("endpoint")(_check_endpoint)


class OtlpHttpConfig(ServerConfig):
    endpoint: str = Field("127.0.0.1:4318", description="HOST:PORT to listen on for OTLP/HTTP.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest body accepted, after gzip decompression."
    )

    _v = field_validator("endpoint")(_check_endpoint)


class OtlpReceiverConfig(ComponentConfig):
    grpc: OtlpGrpcConfig | None = Field(default_factory=OtlpGrpcConfig, description="null disables gRPC.")
    http: OtlpHttpConfig | None = Field(default_factory=OtlpHttpConfig, description="null disables HTTP.")
    enqueue_timeout: float = Field(
        0.5, ge=0, description="Seconds a request may wait for room in a full transport before it is refused."
    )
    retry_after: int = Field(1, ge=1, description="Seconds clients are told to wait (Retry-After / RetryInfo).")
    max_spans_per_request: int = Field(100_000, gt=0, description="Requests with more spans are refused.")
    max_attributes_per_span: int = Field(
        1_000, gt=0, description="Spans with more attributes are rejected (partial success)."
    )
    storage_checks: bool = Field(
        True,
        description="Reject spans whose times ClickHouse cannot store (past 2262-04-11) and clamp fixable ones "
        "(end before start, event times out of range). Off only to exercise the dead-letter path.",
    )
    max_attribute_value_length: int = Field(
        1_048_576,
        gt=0,
        description="Longer string (characters) or bytes attribute values are truncated; the span is flagged.",
    )
    max_span_name_length: int = Field(
        1_024, gt=0, description="Longer span and event names are truncated; the span is flagged."
    )


RECEIVER_TYPES: dict[str, type[ComponentConfig]] = {"otlp": OtlpReceiverConfig}  # = RECEIVER_FACTORIES' models


class WalConfig(ComponentConfig):
    enabled: bool = Field(True, description="Acknowledge only what is in the write-ahead log; replay it at start.")
    dir: str | None = Field(None, description="Directory of the log; default <service.data_dir>/wal.")
    fsync: Literal["always", "batch", "off"] = Field(
        "batch", description="always: fsync before every ack; batch: group commit; off: OS page cache only."
    )
    batch_interval: float = Field(0.005, gt=0, le=1, description="Seconds between group fsyncs (fsync: batch).")
    max_bytes: int = Field(1024**3, gt=0, description="Bytes the log may hold; beyond, clients get 429.")
    segment_bytes: int = Field(16 * 1024**2, gt=0, description="Size at which a new segment file is started.")


class MemoryTransportConfig(ComponentConfig):
    capacity_spans: int = Field(200_000, gt=0, description="Spans the in-process queue holds (waiting + in flight).")
    wal: WalConfig = Field(default_factory=WalConfig, description="The durable write-ahead log of the queue.")


class KafkaSecurityConfig(ComponentConfig):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True


class KafkaTransportConfig(ComponentConfig):
    brokers: str = Field("localhost:9092", description="Comma-separated bootstrap servers.")
    topic: str = Field("otlp_spans", description="Topic carrying OTLP ExportTraceServiceRequest protobuf.")
    alerts_topic: str = Field("tracepipe.alerts", description="Topic receiving alert events as JSON.")
    dead_letter_topic: str = Field(
        "tracepipe.dead-letter", description="Topic receiving dead letters (spans a sink refused) as OTLP protobuf."
    )
    logs_topic: str = Field(
        "otlp_logs", description="Topic the receiver role sends OTLP logs to (ExportLogsServiceRequest protobuf)."
    )
    partitions: int = Field(12, gt=0, description="Partitions used when the topic is created.")
    replication_factor: int = Field(1, gt=0)
    create_topics: bool = Field(True, description="Create missing topics at start (else only verify).")
    client_id: str = "tracepipe"
    group_id: str = Field("tracepipe-worker", description="Consumer group of the workers.")
    acks: Literal["all", "1", "0"] = "all"
    enable_idempotence: bool = Field(True, description="Idempotent producer (turn off for brokers without it).")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    gzip_level: int = Field(
        6, ge=1, le=9,
        description="gzip level of the receiver's Kafka batches (1 fastest, 9 smallest; the Java client's and "
        "librdkafka's default is 6, aiokafka's own 9).",
    )
    linger_ms: int = Field(5, ge=0)
    max_batch_bytes: int = Field(1024 * 1024, gt=0)
    max_request_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_message_bytes: int = Field(
        1_000_000, gt=0,
        description="The receiver packs the traces of a request that go to one partition into one message up to "
        "this size (a trace larger than it goes alone); keep it under the broker's message.max.bytes.",
    )
    produce_timeout: float = Field(10.0, gt=0, description="Seconds before an unacknowledged produce fails.")
    security: KafkaSecurityConfig = Field(default_factory=KafkaSecurityConfig)
    max_in_flight_spans: int = Field(
        200_000, gt=0,
        description="Spans a receiver may have waiting for Kafka acks; beyond, clients get 429/RESOURCE_EXHAUSTED.",
    )
    max_batch_messages: int = Field(5_000, gt=0, description="Most Kafka messages a worker takes into one batch.")
    events_topic_prefix: str = Field(
        "tracepipe.events.",
        description="Topic prefix of the derived events topics: each event also goes to <prefix><kind> "
        "(anomaly, budget), besides the alert it raises on alerts_topic.",
    )
    producer_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra aiokafka AIOKafkaProducer arguments for the receiver."
    )
    worker_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra Faust app settings for the worker (e.g. broker_session_timeout)."
    )
    group_instance_id: str | None = Field(
        None,
        description="Static group membership id of this worker (unique per worker, stable across its restarts, "
        "e.g. the pod name); empty or null: dynamic membership.",
    )
    session_timeout: float = Field(
        10.0, gt=0, description="Seconds without heartbeats before the group drops a worker and rebalances."
    )
    heartbeat_interval: float = Field(3.0, gt=0, description="Seconds between a worker's group heartbeats.")
    rebalance_timeout: float = Field(
        10.0, gt=0, description="Seconds the group waits for every worker to rejoin during a rebalance."
    )
    stop_timeout: float = Field(
        8.0, gt=0,
        description="Seconds a worker takes at most to stop on SIGTERM (batch in flight, flush, leaving the "
        "group); what is not committed by then is redelivered.",
    )

    @field_validator("group_instance_id")
    @classmethod
    def _empty_instance_id_is_dynamic(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("heartbeat_interval")
    @classmethod
    def _heartbeat_below_session(cls, v: float, info: Any) -> float:
        session = info.data.get("session_timeout")
        if session is not None and v >= session:
            raise ValueError(f"must be below session_timeout ({session}s); a third of it is usual")
        return v
    extra: dict[str, Any] = Field(default_factory=dict, description="Deprecated alias of producer_options.")


class TransportConfig(ComponentConfig):
    type: Literal["memory", "kafka"] = "memory"
    memory: MemoryTransportConfig = Field(default_factory=MemoryTransportConfig)
    kafka: KafkaTransportConfig = Field(default_factory=KafkaTransportConfig)


class PipelineConfig(ComponentConfig):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(
        None,
        alias="from",
        description="Take the output of this pipeline's processors instead of the receivers' spans.",
    )
    receivers: list[str] = Field(default_factory=list, description="Receiver ids; empty means all.")
    processors: list[str] = Field(default_factory=list, description="Processor ids, run in this order.")
    sinks: list[str] = Field(..., min_length=1, description="Sink ids; every one must ack a batch.")


class BatchConfig(ComponentConfig):
    max_spans: int = Field(
        20_000, gt=0,
        description="Most spans in one batch taken off the transport (a busy worker takes what queued "
        "meanwhile, up to this: larger inserts cost chDB less per span).",
    )
    timeout: float = Field(0.2, ge=0, description="Seconds to wait for a batch to fill.")


class RetryConfig(ComponentConfig):
    initial_backoff: float = Field(0.2, gt=0)
    max_backoff: float = Field(10.0, gt=0)
    max_attempts: int | None = Field(
        None, ge=1,
        description="Writes of one batch to one sink before its retryable failures count as final and the "
        "batch is bisected and dead-lettered; null: no limit by count (max_elapsed still applies).",
    )
    max_elapsed: float | None = Field(
        300.0, gt=0,
        description="Seconds a batch may keep failing retryably on one sink before it is bisected and the spans "
        "still refused are dead-lettered (reason retries_exhausted); also bounds the bisection. null: retry forever.",
    )


class EndpointConfig(ServerConfig):
    endpoint: str | None = Field(None, description="HOST:PORT, or null to disable.")

    _v = field_validator("endpoint")(lambda v: v if v is None else _check_endpoint(v))


class MetricsEndpointConfig(EndpointConfig):
    auth: bool | None = Field(False, description="Require a bearer token (read scope) to scrape /metrics.")


class LogConfig(ComponentConfig):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class HealthConfig(ComponentConfig):
    stall_timeout: float = Field(
        30.0, gt=0, description="/readyz fails when spans are queued and no batch completed for this long."
    )
    watchdog_timeout: float = Field(
        10.0, gt=0, description="/healthz fails when the event loop or the worker loop made no progress this long."
    )


class ServiceConfig(ComponentConfig):
    pipelines: dict[str, PipelineConfig] = Field(..., min_length=1)
    data_dir: str = Field(DEFAULT_DATA_DIR, description="Where embedded data (chDB) lives.")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    api: EndpointConfig = Field(default_factory=lambda: EndpointConfig(endpoint="127.0.0.1:8081"))
    metrics: MetricsEndpointConfig = Field(default_factory=lambda: MetricsEndpointConfig(endpoint="127.0.0.1:9464"))
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The audit log of API reads and deletes.")
    query_sink: str | None = Field(None, description="ClickHouse sink id the query API reads; default the first.")
    log: LogConfig = Field(default_factory=LogConfig)
    shutdown_timeout: float = Field(30.0, gt=0, description="Seconds to drain queued spans on shutdown.")
    health: HealthConfig = Field(default_factory=HealthConfig)


class RawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receivers: dict[str, dict[str, Any] | None] = Field(default_factory=lambda: {"otlp": {}})
    processors: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    sinks: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    auth: AuthConfig | None = Field(None, description="Bearer tokens; absent: listeners run without auth.")
    service: ServiceConfig


@dataclass
class ComponentSpec:
    id: str
    type: str
    config: ComponentConfig


@dataclass
class Config:
    """A fully validated configuration."""

    receivers: dict[str, ComponentSpec]
    processors: dict[str, ComponentSpec]
    sinks: dict[str, ComponentSpec]
    transport: TransportConfig
    service: ServiceConfig
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source: str = "<embedded default>"
    auth: AuthConfig | None = None
    tokens: list[TokenEntry] = field(default_factory=list)  # auth.tokens plus auth.tokens_file

    @property
    def data_dir(self) -> Path:
        return Path(self.service.data_dir)

    def sinks_of_type(self, type_name: str) -> list[ComponentSpec]:
        return [s for s in self.sinks.values() if s.type == type_name]


# --- loading -----------------------------------------------------------------------


@dataclass
class Overrides:
    """Command-line flags that override common settings without a file."""

    data_dir: str | None = None
    otlp_grpc: str | None = None
    otlp_http: str | None = None
    api: str | None = None
    metrics: str | None = None


def apply_overrides(raw: dict[str, Any], ov: Overrides) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    service = raw.setdefault("service", {}) or {}
    raw["service"] = service
    if ov.data_dir is not None:
        service["data_dir"] = ov.data_dir
    if ov.api is not None:
        service["api"] = {**(service.get("api") or {}), "endpoint": None if ov.api in ("", "off", "none") else ov.api}
    if ov.metrics is not None:
        service["metrics"] = {**(service.get("metrics") or {}),
                              "endpoint": None if ov.metrics in ("", "off", "none") else ov.metrics}
    for flag, key in ((ov.otlp_grpc, "grpc"), (ov.otlp_http, "http")):
        if flag is None:
            continue
        receivers = raw.setdefault("receivers", {"otlp": {}}) or {"otlp": {}}
        raw["receivers"] = receivers
        otlp_ids = [rid for rid in receivers if split_component_id(rid)[0] == "otlp"] or ["otlp"]
        for rid in otlp_ids:
            rec = receivers.get(rid) or {}
            receivers[rid] = rec
            rec[key] = None if flag in ("", "off", "none") else {**(rec.get(key) or {}), "endpoint": flag}
    return raw


def read_yaml(path: Path | None) -> tuple[dict[str, Any], str]:
    """The YAML document at `path` (or the embedded default) and a name for messages."""
    source_path = path or DEFAULT_CONFIG_PATH
    source = str(path) if path else "<embedded default>"
    try:
        text = source_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"file not found: {source_path}"], source) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"cannot read {source_path}: {e}"], source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{where}YAML syntax error: {problem}"], source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(root): expected a mapping of sections"], source)
    return data, source


def load_config(
    path: str | Path | None = None,
    overrides: Overrides | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, substitute, override and validate a configuration. Raises ConfigError."""
    raw, source = read_yaml(Path(path) if path else None)
    return build_config(raw, source=source, overrides=overrides, env=env)


def build_config(
    raw: dict[str, Any],
    *,
    source: str = "<dict>",
    overrides: Overrides | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    from pipeline.auth.config import load_tokens
    from pipeline.auth.listeners import check_listeners
    from pipeline.receivers import RECEIVER_FACTORIES
    from processors import PROCESSOR_FACTORIES
    from sinks import SINK_FACTORIES

    receiver_models = {k: f.config_model for k, f in RECEIVER_FACTORIES.items()}
    errors: list[str] = []
    raw = substitute_env(raw, os.environ if env is None else env, errors=errors)
    if overrides is not None:
        raw = apply_overrides(raw, overrides)
    try:
        top = RawConfig.model_validate(raw)
    except ValidationError as e:
        errors.extend(validation_messages(e))
        # Still check the components themselves, so one run reports every error.
        proc_models = {k: f.config_model for k, f in PROCESSOR_FACTORIES.items()}
        sink_models = {k: f.config_model for k, f in SINK_FACTORIES.items()}
        for section, models in (("receivers", receiver_models), ("processors", proc_models), ("sinks", sink_models)):
            body = raw.get(section)
            if isinstance(body, dict) and not any(err.startswith(f"{section}.") for err in errors):
                _build_components(section, {k: v if isinstance(v, dict) else None for k, v in body.items()},
                                  models, errors)
        service = raw.get("service")
        pipes_raw = service.get("pipelines") if isinstance(service, dict) else None
        if isinstance(pipes_raw, dict):
            pipes: dict[str, PipelineConfig] = {}
            for name, body in pipes_raw.items():
                try:
                    pipes[name] = PipelineConfig.model_validate(body or {})
                except ValidationError:
                    continue  # already reported above
            declared = [set(raw[k]) if isinstance(raw.get(k), dict) else set() for k in ("receivers", "processors",
                                                                                         "sinks")]
            if "receivers" not in raw:
                declared[0] = {"otlp"}
            _check_pipeline_refs(pipes, *declared, errors)
            _check_pipeline_sources(pipes, errors)
        raise ConfigError(errors, source) from None

    receivers = _build_components("receivers", top.receivers, receiver_models, errors)
    processors = _build_components(
        "processors", top.processors, {k: f.config_model for k, f in PROCESSOR_FACTORIES.items()}, errors
    )
    sinks = _build_components("sinks", top.sinks, {k: f.config_model for k, f in SINK_FACTORIES.items()}, errors)

    _check_pipeline_refs(top.service.pipelines, receivers, processors, sinks, errors)
    _check_pipeline_sources(top.service.pipelines, errors)
    if top.service.query_sink is not None:
        spec = sinks.get(top.service.query_sink)
        if spec is None or spec.type != "clickhouse":
            errors.append(f"service.query_sink: {top.service.query_sink!r} is not a declared clickhouse sink")
    tokens = load_tokens(top.auth, errors) if top.auth is not None else []
    check_listeners(receivers, top.service, top.auth, errors)
    if errors:
        raise ConfigError(errors, source)
    return Config(
        receivers=receivers,
        processors=processors,
        sinks=sinks,
        transport=top.transport,
        service=top.service,
        alerts=top.alerts,
        source=source,
        auth=top.auth,
        tokens=tokens,
    )


def _check_pipeline_refs(
    pipelines: Mapping[str, PipelineConfig],
    receivers: Mapping[str, Any] | set[str],
    processors: Mapping[str, Any] | set[str],
    sinks: Mapping[str, Any] | set[str],
    errors: list[str],
) -> None:
    for pname, pipe in pipelines.items():
        base = f"service.pipelines.{pname}"
        for field_name, declared, kind in (
            ("receivers", receivers, "receiver"),
            ("processors", processors, "processor"),
            ("sinks", sinks, "sink"),
        ):
            ids: list[str] = getattr(pipe, field_name)
            seen: set[str] = set()
            for i, cid in enumerate(ids):
                if cid not in declared:
                    known = ", ".join(sorted(declared)) or "none declared"
                    errors.append(f"{base}.{field_name}[{i}]: {kind} {cid!r} is not declared under "
                                  f"`{field_name}` (declared: {known})")
                if cid in seen:
                    errors.append(f"{base}.{field_name}[{i}]: {kind} {cid!r} is listed twice")
                seen.add(cid)


def _check_pipeline_sources(pipelines: Mapping[str, PipelineConfig], errors: list[str]) -> None:
    for pname, pipe in pipelines.items():
        if pipe.source is None:
            continue
        path = f"service.pipelines.{pname}.from"
        if pipe.source not in pipelines:
            errors.append(f"{path}: no pipeline named {pipe.source!r} (pipelines: {', '.join(pipelines)})")
            continue
        if pipe.receivers:
            errors.append(f"service.pipelines.{pname}.receivers: a pipeline with `from` takes no receivers")
        seen = {pname}
        cur: str | None = pipe.source
        while cur is not None and cur in pipelines:
            if cur in seen:
                errors.append(f"{path}: pipelines form a cycle through {cur!r}")
                break
            seen.add(cur)
            cur = pipelines[cur].source


def _build_components(
    section: str,
    declared: dict[str, dict[str, Any] | None],
    models: Mapping[str, type[ComponentConfig]],
    errors: list[str],
) -> dict[str, ComponentSpec]:
    out: dict[str, ComponentSpec] = {}
    for cid, body in declared.items():
        type_name, _name = split_component_id(cid)
        model = models.get(type_name)
        path = f"{section}.{cid}"
        if model is None:
            known = ", ".join(sorted(models))
            errors.append(f"{path}: unknown {section[:-1]} type {type_name!r} (known: {known})")
            continue
        try:
            cfg = model.model_validate(body or {})
        except ValidationError as e:
            errors.extend(validation_messages(e, path))
            # keep the id declared so pipelines referencing it are not reported twice
            out[cid] = ComponentSpec(cid, type_name, model.model_construct())
            continue
        out[cid] = ComponentSpec(cid, type_name, cfg)
    return out


def factories_for(section: Literal["processors", "sinks"]) -> Mapping[str, Factory[Any, Any]]:
    if section == "processors":
        from processors import PROCESSOR_FACTORIES

        return PROCESSOR_FACTORIES
    from sinks import SINK_FACTORIES

    return SINK_FACTORIES

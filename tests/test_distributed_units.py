"""Pure parts of the distributed runtime: splitting requests by trace, re-cutting redeliveries."""

from __future__ import annotations

import os

from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request, spans_in
from pipeline.otlp.wire import resource_spans_fields
from pipeline.transport.kafka_partitioner import KeyPartitioner, partitions_of
from pipeline.transport.kafka_producer import pack_by_partition, split_by_trace
from pipeline.worker.cuts import PlannedBatch, contiguous_run, plan_batches


def test_split_by_trace_gives_one_keyed_message_per_trace_with_wrappers_kept() -> None:
    req = make_request(5, seed=3, prompt_bytes=10)
    # two traces sharing one ResourceSpans/ScopeSpans: move trace 1's spans under trace 0's scope
    req.resource_spans[0].scope_spans[0].spans.extend(req.resource_spans[1].scope_spans[0].spans)
    del req.resource_spans[1]
    messages = split_by_trace(req)
    assert len(messages) == 5
    total = 0
    for key, value in messages:
        part = ExportTraceServiceRequest.FromString(value)
        tids = {sp.trace_id.hex() for rs in part.resource_spans for ss in rs.scope_spans for sp in ss.spans}
        assert tids == {key.decode()}
        for rs in part.resource_spans:
            assert rs.resource.attributes[0].key == "service.name"
            assert all(ss.scope.name == "bench" for ss in rs.scope_spans)
        total += spans_in(part)
    assert total == spans_in(req)


def test_split_by_trace_sends_a_single_trace_request_unchanged() -> None:
    req = make_request(1, seed=4, prompt_bytes=10)
    [(key, value)] = split_by_trace(req)
    assert value == req.SerializeToString()
    assert key.decode() == req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


def test_split_by_trace_forwards_the_received_bytes_of_an_unchanged_one_trace_request() -> None:
    req = make_request(1, seed=4, prompt_bytes=10)
    raw = req.SerializeToString()
    [(key, value)] = split_by_trace(req, raw)
    assert value is raw and key.decode() == req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


def test_split_by_trace_slices_the_received_bytes_as_serialising_would_split_them() -> None:
    req = make_request(6, seed=7, prompt_bytes=300)
    # trace 1's spans also under trace 0's ResourceSpans: that one is cut apart, the others sliced
    req.resource_spans[0].scope_spans[0].spans.extend(req.resource_spans[1].scope_spans[0].spans[:1])
    raw = req.SerializeToString()
    fields = resource_spans_fields(raw)
    assert fields is not None and b"".join(fields) == raw
    assert [ExportTraceServiceRequest.FromString(f).resource_spans[0] for f in fields] == list(req.resource_spans)
    sliced = split_by_trace(req, raw)
    assert sliced == split_by_trace(req)  # the same keys and bytes as from the decoded request
    assert len(sliced) == 6


def test_resource_spans_fields_refuses_bytes_that_are_not_a_plain_request() -> None:
    raw = make_request(2, seed=8, prompt_bytes=10).SerializeToString()
    assert resource_spans_fields(b"") == []
    assert resource_spans_fields(raw[:-1]) is None  # truncated last field
    assert resource_spans_fields(raw + b"\x10\x01") is None  # an unknown varint field
    assert resource_spans_fields(b"\x0a\xff\xff\xff\xff\xff\xff") is None  # runaway length varint


def test_split_by_trace_cuts_interleaved_traces_out_of_one_scope_keeping_schema_urls() -> None:
    src = make_request(3, seed=5, prompt_bytes=10)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.CopyFrom(src.resource_spans[0].resource)
    scopes = [rs.scope_spans.add(schema_url=f"scope-schema-{i}") for i in range(2)]
    for i, ss in enumerate(scopes):
        ss.scope.name = f"scope-{i}"
    spans = [sp for r in src.resource_spans for sp in r.scope_spans[0].spans]
    order = [0, 3, 6, 1, 4, 7, 2, 5, 8]  # the three traces' spans interleaved
    for n, i in enumerate(order):
        scopes[n % 2].spans.add().CopyFrom(spans[i])
    messages = dict(split_by_trace(req))
    assert len(messages) == 3
    for key, value in messages.items():
        part = ExportTraceServiceRequest.FromString(value)
        [prs] = part.resource_spans
        assert prs.schema_url == rs.schema_url and prs.resource == rs.resource
        expected = [
            (ss.scope.name, ss.schema_url, [sp.span_id for sp in ss.spans if sp.trace_id.hex() == key.decode()])
            for ss in rs.scope_spans
        ]
        got = [(ss.scope.name, ss.schema_url, [sp.span_id for sp in ss.spans]) for ss in prs.scope_spans]
        assert got == [e for e in expected if e[2]]
        assert all(sp == next(s for s in spans if s.span_id == sp.span_id) for ss in prs.scope_spans for sp in ss.spans)


def test_key_partitioner_places_every_key_where_aiokafkas_default_partitioner_does() -> None:
    keys = [os.urandom(16).hex().encode() for _ in range(500)] + [os.urandom(n) for n in range(12) for _ in range(20)]
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    for n in (1, 4, 12, 7):
        parts = list(range(n))
        assert [ours(k, parts, parts) for k in keys] == [theirs(k, parts, parts) for k in keys]
    assert ours(None, [0, 1, 2], [2]) == 2


def test_partitions_of_a_request_are_where_aiokafkas_default_partitioner_puts_each_key() -> None:
    theirs = DefaultPartitioner()
    trace_keys = [os.urandom(16).hex().encode() for _ in range(300)]
    for keys in (trace_keys, [os.urandom(8) for _ in range(50)], [os.urandom(n) for n in range(12)], trace_keys[:1]):
        for n in (1, 4, 12, 7):
            parts = list(range(n))
            assert partitions_of(keys, n) == [theirs(k, parts, parts) for k in keys]
    assert partitions_of([], 4) == []


def test_fresh_offsets_form_one_batch() -> None:
    plans, held = plan_batches([10, 11, 12], [])
    assert plans == [PlannedBatch(0, 3, 10, 12, False)] and held == 3


def test_redelivered_offsets_are_recut_to_their_recorded_range() -> None:
    # recorded (stored, not committed): 10-12 and 13-14; redelivered as one take 10..16
    plans, held = plan_batches([10, 11, 12, 13, 14, 15, 16], [(10, 12), (13, 14)])
    assert [(p.first, p.last, p.redelivered) for p in plans] == [(10, 12, True), (13, 14, True), (15, 16, False)]
    assert held == 7


def test_incomplete_redelivered_range_is_held_until_complete_or_forced() -> None:
    plans, held = plan_batches([10, 11], [(10, 12)])
    assert plans == [] and held == 0
    plans, held = plan_batches([10, 11], [(10, 12)], force=True)
    assert [(p.first, p.last, p.partial) for p in plans] == [(10, 12, True)] and held == 2
    # a complete redelivery (the tail reached) is not partial, even when it starts mid-range
    plans, _ = plan_batches([11, 12], [(10, 12)])
    assert [(p.first, p.last, p.partial) for p in plans] == [(10, 12, False)]


def test_new_batch_never_straddles_a_later_recorded_range() -> None:
    plans, _ = plan_batches([5, 6, 7, 8], [(7, 8)])
    assert [(p.first, p.last, p.redelivered) for p in plans] == [(5, 6, False), (7, 8, True)]


def test_contiguous_run_stops_at_the_first_hole() -> None:
    assert contiguous_run([92, 93, 94], 92) == 3
    assert contiguous_run([92, 94, 95], 92) == 1  # 93 skipped by the consumer: re-read before going on
    assert contiguous_run([94, 95], 92) == 0  # the hole is at the start
    assert contiguous_run([], 5) == 0


def test_kafka_security_reaches_the_producer_and_the_faust_worker() -> None:
    import faust

    from pipeline.config import KafkaSecurityConfig, KafkaTransportConfig
    from pipeline.transport.kafka_common import faust_broker_settings, security_kwargs

    sec = KafkaSecurityConfig(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", sasl_username="u",
                              sasl_password="p")
    assert security_kwargs(sec) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                                    "sasl_plain_username": "u", "sasl_plain_password": "p"}
    settings = faust_broker_settings(KafkaTransportConfig(brokers="a:1, b:2", security=sec))
    assert settings["broker"] == ["kafka://a:1", "kafka://b:2"]
    creds = settings["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism.name == "SCRAM_SHA_256" and creds.username == "u"
    tls = faust_broker_settings(KafkaTransportConfig(security=KafkaSecurityConfig(protocol="SSL")))
    assert isinstance(tls["broker_credentials"], faust.SSLCredentials)
    assert "broker_credentials" not in faust_broker_settings(KafkaTransportConfig())


def test_shipped_config_reads_the_group_instance_id_from_the_environment() -> None:
    from pathlib import Path

    from pipeline.config import load_config

    shipped = Path(__file__).resolve().parents[1] / "config" / "distributed.yaml"
    k = load_config(shipped, env={"TRACEPIPE_GROUP_INSTANCE_ID": "worker-3"}).transport.kafka
    assert k.group_instance_id == "worker-3"
    assert (k.session_timeout, k.heartbeat_interval, k.rebalance_timeout, k.stop_timeout) == (10.0, 3.0, 10.0, 8.0)
    assert load_config(shipped, env={}).transport.kafka.group_instance_id is None  # empty: dynamic membership


def test_group_settings_reach_faust_and_a_heartbeat_beyond_the_session_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    from pipeline.config import KafkaTransportConfig

    with pytest.raises(ValidationError, match="heartbeat_interval"):
        KafkaTransportConfig(session_timeout=6.0, heartbeat_interval=6.0)
    assert KafkaTransportConfig(group_instance_id="  ").group_instance_id is None


def test_faust_app_gets_static_membership_and_group_timeouts(tmp_path) -> None:
    from pipeline.config import build_config
    from pipeline.worker.app import create_app

    raw = {"transport": {"type": "kafka", "kafka": {"group_instance_id": "w-1", "session_timeout": 12.0,
                                                     "heartbeat_interval": 4.0, "rebalance_timeout": 9.0}},
           "sinks": {"prometheus": {}}, "service": {"data_dir": str(tmp_path),
                                                    "pipelines": {"traces": {"sinks": ["prometheus"]}}}}
    cfg = build_config(raw, source="test", env={})

    class Runtime:
        config = cfg

    conf = create_app(Runtime(), 4).conf  # type: ignore[arg-type]
    assert conf.consumer_group_instance_id == "w-1"
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval, conf.broker_rebalance_timeout) == (
        12.0, 4.0, 9.0)


def test_traces_bound_for_one_partition_travel_as_one_message_on_the_partition_of_their_keys() -> None:
    req = make_request(40, seed=5, prompt_bytes=10)
    per_trace = split_by_trace(req)
    packed = pack_by_partition(per_trace, 4, 1_000_000)
    assert len(packed) == len({p for _, _, p in packed}) <= 4  # one message per partition used
    default = DefaultPartitioner()
    seen: dict[str, int] = {}
    for _, value, part in packed:
        msg = ExportTraceServiceRequest.FromString(value)  # the concatenation reads as one request
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    tid = sp.trace_id.hex()
                    # the partition Kafka's default partitioner gives the trace's key
                    assert part == default(tid.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
                    seen[tid] = seen.get(tid, 0) + 1
    assert sum(seen.values()) == spans_in(req) and len(seen) == 40


def test_a_packed_message_stays_under_max_bytes_unless_one_trace_alone_is_larger() -> None:
    per_trace = split_by_trace(make_request(60, seed=6, prompt_bytes=200))
    size = max(len(v) for _, v in per_trace)
    packed = pack_by_partition(per_trace, 2, 3 * size)
    assert all(len(v) <= 3 * size for _, v, _ in packed) and len(packed) > 2
    assert sorted(b"".join(v for _, v, _ in packed)) == sorted(b"".join(v for _, v in per_trace))
    alone = pack_by_partition(per_trace, 2, 1)  # every trace larger than the cap: one message each
    assert len(alone) == len(per_trace)
    assert pack_by_partition(per_trace, 0, 1_000_000) == [(k, v, None) for k, v in per_trace]  # partitions unknown

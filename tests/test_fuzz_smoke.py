"""A bounded run of bench/fuzz_receivers.py against a real `tracepipe run`: 2,000 mutated
OTLP payloads over HTTP (protobuf, JSON, gzip, deflate, bad content types, truncated
bodies) and gRPC get no 5xx and no hang, leave no traceback in the log, and the pipeline
is still ready and still stores a good span afterwards. Plus hypothesis properties of the
two decoders: any JSON document or byte string is a request that decodes again, or an
OtlpDecodeError (the receivers' 400), never another exception."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_receivers import ROOT, run_fuzz, start_pipeline, valid_request
from pipeline.otlp.errors import OtlpDecodeError
from pipeline.otlp.json_mapping import parse_json_request
from pipeline.otlp.limits import decode_protobuf

OTLP_KEYS = ["scopeSpans", "spans", "resource", "attributes", "key", "value", "stringValue", "intValue",
             "doubleValue", "boolValue", "bytesValue", "arrayValue", "kvlistValue", "values", "traceId", "spanId",
             "parentSpanId", "name", "kind", "status", "code", "message", "events", "links", "startTimeUnixNano",
             "endTimeUnixNano", "timeUnixNano", "flags", "droppedAttributesCount", "scope", "version"]
_VALID = valid_request(random.Random(5)).SerializeToString()


def test_two_thousand_fuzzed_payloads_get_no_5xx_and_leave_the_pipeline_healthy(tmp_path: Path) -> None:
    pipe = start_pipeline(str(ROOT), [])
    try:
        report = run_fuzz(pipe, 2000, seed=20261201, concurrency=4, out=tmp_path / "failures")
    finally:
        pipe.stop()
        shutil.rmtree(pipe.tmp, ignore_errors=True)
    summary = report.text(2000)
    assert report.flagged == [], summary
    assert report.tracebacks == 0, summary
    assert report.ready_after and report.stores_after, summary
    statuses = {s for (_, s) in report.counts}
    # the run exercised acceptance and each kind of refusal on both receivers
    assert {"200", "400", "415", "OK", "INVALID_ARGUMENT"} <= statuses, summary
    assert sum(report.counts.values()) == 2000


# --- property tests of the decoders (hypothesis): any input -> a request or OtlpDecodeError ---

JSON_LEAF = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(OTLP_KEYS) | st.text(max_size=8), inner, max_size=4),
                          max_leaves=40)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(doc=st.fixed_dictionaries({"resourceSpans": st.lists(JSON_VALUE, max_size=3)}))
def test_any_json_document_is_a_decodable_request_or_a_decode_error(doc: dict) -> None:
    body = json.dumps(doc).encode()
    try:
        req = parse_json_request(body)
    except OtlpDecodeError as e:
        assert e.message and len(e.message) < 400
    else:
        assert decode_protobuf(req.SerializeToString()) == req


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=400))
def test_any_bytes_are_a_request_or_a_decode_error(data: bytes, cut: int) -> None:
    for body in (data, _VALID[:cut] + data):
        try:
            decode_protobuf(body)
        except OtlpDecodeError as e:
            assert e.message.startswith(("malformed OTLP protobuf", "attribute values nested too deeply"))

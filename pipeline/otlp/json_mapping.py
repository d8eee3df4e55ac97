"""The OTLP/JSON mapping (OTLP spec, "JSON Protobuf Encoding").

It is the proto3 JSON mapping with OTLP's exceptions: trace and span ids are hex strings
(not base64), keys may be lowerCamelCase or the proto field names, enums may be ints or
names, 64-bit integers may be strings or numbers, and unknown fields are ignored.
`parse_json_request` converts the hex ids to the base64 form `json_format.ParseDict`
expects and lets protobuf do the rest; every failure becomes an `OtlpDecodeError` with a
message that names the field (never a value). Bare NaN/Infinity tokens (not JSON) and
integers of more than 4,300 digits are refused, and a request is accepted only if its
protobuf form decodes again (pipeline/otlp/limits.py: one depth limit for both encodings).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from pipeline.otlp.errors import OtlpDecodeError
from pipeline.otlp.limits import ensure_decodable

__all__ = ["parse_json_logs_request", "parse_json_metrics_request", "parse_json_request", "response_to_json"]

# id field (either spelling) -> required byte length
_SPAN_IDS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}
_FIELD_RE = re.compile(r"Failed to parse (\w+) field")
_LINK_IDS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8}


def _list(obj: dict[str, Any], camel: str, snake: str, path: str) -> list[Any]:
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{path}.{camel}: expected an array" if path else f"{camel}: expected an array")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{path}: expected an object")
    return value


def _hex_ids(obj: dict[str, Any], fields: dict[str, int], path: str) -> None:
    for key, size in fields.items():
        value = obj.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise OtlpDecodeError(f"{path}.{key}: expected a hex string")
        if len(value) != 2 * size:
            raise OtlpDecodeError(f"{path}.{key}: expected {2 * size} hex characters, got {len(value)}")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise OtlpDecodeError(f"{path}.{key}: not a hex string") from None
        if len(raw) != size:  # fromhex skips whitespace
            raise OtlpDecodeError(f"{path}.{key}: not a hex string")
        obj[key] = base64.b64encode(raw).decode("ascii")


def _convert_ids(doc: dict[str, Any]) -> None:
    for ri, rs in enumerate(_list(doc, "resourceSpans", "resource_spans", "")):
        rpath = f"resourceSpans[{ri}]"
        rs = _object(rs, rpath)
        for si, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", rpath)):
            spath = f"{rpath}.scopeSpans[{si}]"
            ss = _object(ss, spath)
            for i, sp in enumerate(_list(ss, "spans", "spans", spath)):
                path = f"{spath}.spans[{i}]"
                sp = _object(sp, path)
                _hex_ids(sp, _SPAN_IDS, path)
                for li, lk in enumerate(_list(sp, "links", "links", path)):
                    lpath = f"{path}.links[{li}]"
                    _hex_ids(_object(lk, lpath), _LINK_IDS, lpath)


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body -> ExportTraceServiceRequest. Raises OtlpDecodeError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OtlpDecodeError(f"body is not valid UTF-8 (byte offset {e.start})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except OtlpDecodeError:
        raise
    except json.JSONDecodeError as e:
        raise OtlpDecodeError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise OtlpDecodeError("malformed JSON: nested too deeply") from None
    except ValueError as e:  # an integer of more than sys.get_int_max_str_digits() digits
        if "digits" in str(e):
            raise OtlpDecodeError("malformed JSON: a number has more than 4300 digits") from None
        raise OtlpDecodeError("malformed JSON") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError("expected a JSON object with resourceSpans")
    req = _parse_doc(doc)
    ensure_decodable(req)  # one depth limit for both encodings: what upb reads back downstream
    return req


def _no_constant(name: str) -> float:
    raise OtlpDecodeError(
        f"malformed JSON: {name} is not a JSON value (OTLP/JSON writes doubles as the strings "
        '"NaN", "Infinity", "-Infinity")'
    )


def _parse_doc(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    try:
        return _fast_request(doc)
    except OtlpDecodeError:
        raise
    except Exception:  # anything the fast path does not handle: json_format decides (and explains)
        pass
    _convert_ids(doc)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise OtlpDecodeError(f"invalid OTLP/JSON at {_describe(str(e))}") from None
    except Exception as e:  # json_format raising anything else is still bad input, never a 500
        raise OtlpDecodeError(f"invalid OTLP/JSON ({type(e).__name__})") from None
    return req


# --- logs and metrics ------------------------------------------------------------------------
# The same mapping for ExportLogsServiceRequest and ExportMetricsServiceRequest: their hex ids
# (a log record's traceId/spanId, a metric exemplar's) are converted, json_format does the rest
# (logs and metrics are far less voluminous than spans here: no fast path).

_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


def _load(body: bytes, top: str) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OtlpDecodeError(f"body is not valid UTF-8 (byte offset {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise OtlpDecodeError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise OtlpDecodeError("malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError(f"expected a JSON object with {top}")
    return doc


def _parse_dict(doc: dict[str, Any], message: Message) -> None:
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise OtlpDecodeError(f"invalid OTLP/JSON at {_describe(str(e))}") from None


def parse_json_logs_request(body: bytes) -> ExportLogsServiceRequest:
    """An OTLP/JSON logs body -> ExportLogsServiceRequest. Raises OtlpDecodeError."""
    doc = _load(body, "resourceLogs")
    for ri, rl in enumerate(_list(doc, "resourceLogs", "resource_logs", "")):
        rpath = f"resourceLogs[{ri}]"
        rl = _object(rl, rpath)
        for si, sl in enumerate(_list(rl, "scopeLogs", "scope_logs", rpath)):
            spath = f"{rpath}.scopeLogs[{si}]"
            sl = _object(sl, spath)
            for i, rec in enumerate(_list(sl, "logRecords", "log_records", spath)):
                path = f"{spath}.logRecords[{i}]"
                _hex_ids(_object(rec, path), _LINK_IDS, path)
    req = ExportLogsServiceRequest()
    _parse_dict(doc, req)
    return req


def parse_json_metrics_request(body: bytes) -> ExportMetricsServiceRequest:
    """An OTLP/JSON metrics body -> ExportMetricsServiceRequest. Raises OtlpDecodeError."""
    doc = _load(body, "resourceMetrics")
    for ri, rm in enumerate(_list(doc, "resourceMetrics", "resource_metrics", "")):
        rpath = f"resourceMetrics[{ri}]"
        rm = _object(rm, rpath)
        for si, sm in enumerate(_list(rm, "scopeMetrics", "scope_metrics", rpath)):
            spath = f"{rpath}.scopeMetrics[{si}]"
            sm = _object(sm, spath)
            for mi, metric in enumerate(_list(sm, "metrics", "metrics", spath)):
                mpath = f"{spath}.metrics[{mi}]"
                metric = _object(metric, mpath)
                for kind in _METRIC_KINDS:
                    data = metric.get(kind)
                    if data is None:
                        continue
                    kpath = f"{mpath}.{kind}"
                    data = _object(data, kpath)
                    for pi, point in enumerate(_list(data, "dataPoints", "data_points", kpath)):
                        ppath = f"{kpath}.dataPoints[{pi}]"
                        point = _object(point, ppath)
                        for ei, ex in enumerate(_list(point, "exemplars", "exemplars", ppath)):
                            epath = f"{ppath}.exemplars[{ei}]"
                            _hex_ids(_object(ex, epath), _LINK_IDS, epath)
    req = ExportMetricsServiceRequest()
    _parse_dict(doc, req)
    return req


# --- the fast path -------------------------------------------------------------------------
# json_format.ParseDict is pure Python (~6 k spans/s). The trace schema is small, so it is
# walked here directly, filling the messages in place top-down (~4x faster). Whatever this path does not
# recognise (a value of an unexpected JSON type, a field it does not know such as
# `entityRefs`, a float-formatted int64) raises a non-OtlpDecodeError exception and the
# request goes through ParseDict instead, which stays the reference for the mapping.


class _Fallback(Exception):
    pass


_SPAN_KINDS = dict(PbSpan.SpanKind.items())
_STATUS_CODES = dict(Status.StatusCode.items())


def _int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is str:
        return int(v)
    raise _Fallback


def _enum(v: Any, names: dict[str, int]) -> int:
    if type(v) is int:
        return v
    if type(v) is str:
        return names.get(v, 0)  # json_format with ignore_unknown_fields: unknown names -> default
    raise _Fallback


def _double(v: Any) -> float:
    if type(v) is float or type(v) is int:
        return float(v)
    raise _Fallback  # "NaN", "Infinity", numeric strings: json_format


def _b64(v: Any) -> bytes:
    if type(v) is not str:
        raise _Fallback
    if "-" in v or "_" in v:
        return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
    return base64.b64decode(v + "=" * (-len(v) % 4), validate=True)


def _hex(v: Any, size: int, path: str, key: str) -> bytes:
    if v is None or v == "":
        return b""
    if type(v) is not str:
        raise OtlpDecodeError(f"{path}.{key}: expected a hex string")
    if len(v) != 2 * size:
        raise OtlpDecodeError(f"{path}.{key}: expected {2 * size} hex characters, got {len(v)}")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise OtlpDecodeError(f"{path}.{key}: not a hex string") from None
    if len(raw) != size:  # fromhex skips whitespace
        raise OtlpDecodeError(f"{path}.{key}: not a hex string")
    return raw


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _set_any(target: Any, d: Any) -> None:
    """Fill the AnyValue `target` in place from its JSON object."""
    if type(d) is not dict:
        raise _Fallback
    seen = False
    for k, v in d.items():
        if v is None:
            continue
        if seen:
            raise _Fallback  # two members of the oneof: json_format's error
        seen = True
        if k == "stringValue" or k == "string_value":
            target.string_value = v
        elif k == "intValue" or k == "int_value":
            target.int_value = _int(v)
        elif k == "boolValue" or k == "bool_value":
            if type(v) is not bool:
                raise _Fallback
            target.bool_value = v
        elif k == "doubleValue" or k == "double_value":
            target.double_value = _double(v)
        elif k == "arrayValue" or k == "array_value":
            arr = target.array_value
            arr.SetInParent()
            add = arr.values.add
            for x in v.get("values") or ():
                _set_any(add(), x)
        elif k == "kvlistValue" or k == "kvlist_value":
            kvl = target.kvlist_value
            kvl.SetInParent()
            _fill_kvs(kvl.values, v.get("values"))
        elif k == "bytesValue" or k == "bytes_value":
            target.bytes_value = _b64(v)
        else:
            raise _Fallback  # a member this path does not know (string_value_strindex, ...)


def _fill_kvs(target: Any, items: Any) -> None:
    """Append KeyValues from their JSON list to the repeated field `target`."""
    if not items:
        return
    add = target.add
    for kv in items:
        key = kv.get("key")
        pb = add(key="" if key is None else key)
        value = kv.get("value")
        if value is not None:
            d = value
            # the common case inline: {"stringValue": "..."}
            if type(d) is dict and len(d) == 1 and "stringValue" in d:
                pb.value.string_value = d["stringValue"]
            else:
                pb.value.SetInParent()
                _set_any(pb.value, d)


def _dropped(d: dict[str, Any]) -> int:
    v = _g(d, "droppedAttributesCount", "dropped_attributes_count")
    return 0 if v is None else _int(v)


def _opt_int(v: Any) -> int:
    return 0 if v is None else _int(v)


def _fast_request(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    add_rs = req.resource_spans.add
    for ri, rs in enumerate(_g(doc, "resourceSpans", "resource_spans") or ()):
        rpath = f"resourceSpans[{ri}]"
        rs_pb = add_rs(schema_url=_g(rs, "schemaUrl", "schema_url") or "")
        res = rs.get("resource")
        if res is not None:
            if _g(res, "entityRefs", "entity_refs") is not None:
                raise _Fallback
            res_pb = rs_pb.resource
            res_pb.SetInParent()
            res_pb.dropped_attributes_count = _dropped(res)
            _fill_kvs(res_pb.attributes, res.get("attributes"))
        add_ss = rs_pb.scope_spans.add
        for si, ss in enumerate(_g(rs, "scopeSpans", "scope_spans") or ()):
            spath = f"{rpath}.scopeSpans[{si}]"
            ss_pb = add_ss(schema_url=_g(ss, "schemaUrl", "schema_url") or "")
            sc = ss.get("scope")
            if sc is not None:
                sc_pb = ss_pb.scope
                sc_pb.SetInParent()
                sc_pb.name = sc.get("name") or ""
                sc_pb.version = sc.get("version") or ""
                sc_pb.dropped_attributes_count = _dropped(sc)
                _fill_kvs(sc_pb.attributes, sc.get("attributes"))
            add_span = ss_pb.spans.add
            for i, sp in enumerate(ss.get("spans") or ()):
                path = f"{spath}.spans[{i}]"
                g = sp.get
                kind = g("kind")
                sp_pb = add_span(
                    trace_id=_hex(_g(sp, "traceId", "trace_id"), 16, path, "traceId"),
                    span_id=_hex(_g(sp, "spanId", "span_id"), 8, path, "spanId"),
                    parent_span_id=_hex(_g(sp, "parentSpanId", "parent_span_id"), 8, path, "parentSpanId"),
                    trace_state=_g(sp, "traceState", "trace_state") or "",
                    flags=_opt_int(g("flags")),
                    name=g("name") or "",
                    kind=0 if kind is None else _enum(kind, _SPAN_KINDS),
                    start_time_unix_nano=_opt_int(_g(sp, "startTimeUnixNano", "start_time_unix_nano")),
                    end_time_unix_nano=_opt_int(_g(sp, "endTimeUnixNano", "end_time_unix_nano")),
                    dropped_attributes_count=_dropped(sp),
                    dropped_events_count=_opt_int(_g(sp, "droppedEventsCount", "dropped_events_count")),
                    dropped_links_count=_opt_int(_g(sp, "droppedLinksCount", "dropped_links_count")),
                )
                _fill_kvs(sp_pb.attributes, g("attributes"))
                events = g("events")
                if events:
                    add_ev = sp_pb.events.add
                    for ev in events:
                        ev_pb = add_ev(
                            time_unix_nano=_opt_int(_g(ev, "timeUnixNano", "time_unix_nano")),
                            name=ev.get("name") or "",
                            dropped_attributes_count=_dropped(ev),
                        )
                        _fill_kvs(ev_pb.attributes, ev.get("attributes"))
                links = g("links")
                if links:
                    add_lk = sp_pb.links.add
                    for li, lk in enumerate(links):
                        lpath = f"{path}.links[{li}]"
                        lk_pb = add_lk(
                            trace_id=_hex(_g(lk, "traceId", "trace_id"), 16, lpath, "traceId"),
                            span_id=_hex(_g(lk, "spanId", "span_id"), 8, lpath, "spanId"),
                            trace_state=_g(lk, "traceState", "trace_state") or "",
                            dropped_attributes_count=_dropped(lk),
                            flags=_opt_int(lk.get("flags")),
                        )
                        _fill_kvs(lk_pb.attributes, lk.get("attributes"))
                st = g("status")
                if st is not None:
                    st_pb = sp_pb.status
                    st_pb.SetInParent()
                    code = st.get("code")
                    st_pb.code = 0 if code is None else _enum(code, _STATUS_CODES)
                    st_pb.message = st.get("message") or ""
    return req


def _describe(message: str) -> str:
    """json_format's messages quote offending values (possibly attribute values): keep only
    the field path they name, and the kind of problem when it is known."""
    fields = _FIELD_RE.findall(message)
    where = ".".join(fields) if fields else "request"
    if "surrogate" in message:
        return f"{where}: invalid unicode (unpaired surrogate)"
    if "Invalid enum value" in message or "Enum" in message:
        return f"{where}: unknown enum value"
    return f"{where}: invalid value"


def response_to_json(resp: Message) -> bytes:
    """An OTLP export response (traces, logs, metrics) or google.rpc.Status as OTLP/JSON bytes."""
    return json_format.MessageToJson(resp, indent=None).encode("utf-8")

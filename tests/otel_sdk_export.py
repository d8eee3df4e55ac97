"""Export one span with the real OpenTelemetry SDK exporter, configured ONLY by environment.

    python -m tests.otel_sdk_export grpc|http

The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _CERTIFICATE, _CLIENT_CERTIFICATE,
_CLIENT_KEY and _TIMEOUT itself. The span claims `tenant.id=intruder` on its resource and on
itself. Prints `trace_id=<hex>` and `result=SUCCESS|FAILURE`; the exporter's own error log
(status code) goes to stderr.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class _Capture(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def main(protocol: str) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter()
    capture = _Capture()
    provider = TracerProvider(resource=Resource.create({"service.name": "auth-e2e", "tenant.id": "intruder"}))
    provider.add_span_processor(SimpleSpanProcessor(capture))
    tracer = provider.get_tracer("auth-e2e")
    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
        span.set_attribute("tenant.id", "intruder")
        span.set_attribute("gen_ai.operation.name", "chat")
        trace_id = span.get_span_context().trace_id
    print(f"trace_id={trace_id:032x}", flush=True)
    result = exporter.export(capture.spans)
    print(f"result={result.name}", flush=True)
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""An app instrumented with opentelemetry-instrumentation-openai-v2 (content capture on) that
exports spans, GenAI log events and metrics with the SDK's real OTLP exporters, configured
only by the standard environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL:
grpc or http/protobuf), as `opentelemetry-instrument` would set them up. Used by
tests/test_genai_logs_e2e.py, in a subprocess (instrumentation patches `openai` globally):

    python -m tests.genai_logs_client BASE_URL PROMPT

Prints one JSON line: the finished spans' trace and span ids and each exporter's export results.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

RESULTS: dict[str, list[str]] = {"spans": [], "logs": [], "metrics": []}


def recording(cls: type, signal: str) -> Any:
    """The exporter class, recording the name of each export's result."""

    class Recording(cls):  # type: ignore[misc, valid-type]
        def export(self, *args: Any, **kwargs: Any) -> Any:
            result = super().export(*args, **kwargs)
            RESULTS[signal].append(getattr(result, "name", str(result)))
            return result

    return Recording


def exporters() -> tuple[Any, Any, Any]:
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    return (
        recording(OTLPSpanExporter, "spans")(),
        recording(OTLPLogExporter, "logs")(),
        recording(OTLPMetricExporter, "metrics")(),
    )


def main() -> None:
    base_url, prompt = sys.argv[1], sys.argv[2]
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    resource = Resource.create({"service.name": "genai-logs-e2e"})
    span_exp, log_exp, metric_exp = exporters()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
    memory = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    meter_provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exp)])

    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(
        tracer_provider=tracer_provider, logger_provider=logger_provider, meter_provider=meter_provider
    )
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": prompt}],
    )
    tracer_provider.force_flush()
    logger_provider.force_flush()
    meter_provider.force_flush()
    finished = [
        {"trace_id": format(sp.context.trace_id, "032x"), "span_id": format(sp.context.span_id, "016x"),
         "name": sp.name}
        for sp in memory.get_finished_spans()
    ]
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()
    print(json.dumps({"results": RESULTS, "spans": finished}), flush=True)


if __name__ == "__main__":
    main()

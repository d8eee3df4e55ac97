"""Run real OpenAI instrumentation against a (fake) OpenAI server and print the spans as OTLP.

Used by tests/test_normalize_instrumentations.py, one subprocess per instrumentation (they all
patch the same `openai` methods, so they cannot share a process):

    python -m tests.genai_capture {openai-v2|openllmetry|openinference} BASE_URL > spans.pb

Makes a chat completion, a streamed chat completion (with usage) and an embeddings call with
the real `openai` client, captures the finished spans with the SDK's InMemorySpanExporter and
writes them to stdout as a serialized OTLP ExportTraceServiceRequest.
"""

from __future__ import annotations

import os
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"


def instrument(which: str, provider: TracerProvider) -> None:
    if which == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    elif which == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor  # type: ignore[no-redef]
    elif which == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor  # type: ignore[no-redef]
    else:
        raise SystemExit(f"unknown instrumentation {which!r}")
    OpenAIInstrumentor().instrument(tracer_provider=provider)


def main() -> None:
    which, base_url = sys.argv[1], sys.argv[2]
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    os.environ.setdefault("TRACELOOP_TELEMETRY", "false")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"capture-{which}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(which, provider)

    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)
    client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello"}], user="user-42"
    )
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass
    client.embeddings.create(model=EMBED_MODEL, input="hello world")
    provider.force_flush()
    request = encode_spans(exporter.get_finished_spans())
    sys.stdout.buffer.write(request.SerializeToString())
    sys.stdout.flush()


if __name__ == "__main__":
    main()

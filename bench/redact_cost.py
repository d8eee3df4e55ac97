"""Cost of the default redaction, and of the disguise handling, on the throughput workload.

Prints, from one run (ratios are what to compare: absolute figures move with the load on
the machine):
1. the chain alone, in process, on the spans of bench/workload.py (3 spans per trace,
   10 attributes each, a prompt of --prompt-bytes and half that of completion): the shipped
   default chain `[redact, normalize, cost]` against `[normalize, cost]`, spans per
   CPU-second, and the ratio;
2. the whole path, `tracepipe run` with the shipped default config against the same config
   without `redact` (OTLP/HTTP -> chain -> chDB), spans per CPU-second of the pipeline
   process, and the ratio (skip with --no-path);
3. the disguise handling: redact alone on the same spans whose prompt is message JSON as
   `json.dumps` writes it by default (non-ASCII text as \\uXXXX escapes: every such value gets a
   normalised view), with percent-encoded URLs, or plain; spans per CPU-second and the
   ratios to plain.

    python -m bench.redact_cost [--spans 30000] [--prompt-bytes 2000] [--no-path]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import TRACES_PER_REQUEST, throughput
from bench.workload import make_request, spans_in
from pipeline.component import ComponentContext
from pipeline.config import DEFAULT_CONFIG_PATH
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span, SpanBatch, copy_span
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors import PROCESSOR_FACTORIES
from tests.pipeline_proc import start_pipeline

BATCH = 1000


def build(chain: list[str], processors: dict[str, Any]) -> list[Any]:
    ctx = ComponentContext("bench", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("bench"))
    out = []
    for pid in chain:
        f = PROCESSOR_FACTORIES[pid.split("/")[0]]
        out.append(f.create(pid, f.config_model.model_validate(processors.get(pid) or {}), ctx))
    return out


def rate(chain: list[Any], spans: list[Span], rounds: int = 2) -> float:
    """Spans per CPU-second through `chain`, best of `rounds` (each on fresh copies)."""
    best = 0.0
    for _ in range(rounds):
        work = [copy_span(s) for s in spans]
        t0 = time.process_time()
        for i in range(0, len(work), BATCH):
            batch = SpanBatch(work[i : i + BATCH], f"b{i}")
            for p in chain:
                batch = p.process(batch)
        best = max(best, len(work) / (time.process_time() - t0))
    return best


def with_prompt(spans: list[Span], how: str) -> list[Span]:
    out = []
    for s in spans:
        c = copy_span(s)
        prompt = c.attributes.get("gen_ai.prompt")
        if isinstance(prompt, str):
            if how == "json_escaped":  # json.dumps default: ensure_ascii, non-ASCII as \\uXXXX
                text = "Grüße, naïve café résumé — " + prompt
                c.attributes["gen_ai.input.messages"] = json.dumps([{"role": "user", "content": text}])
                del c.attributes["gen_ai.prompt"]
            elif how == "percent_url":
                c.attributes["url.full"] = "https://search.example/?q=" + urllib.parse.quote(prompt[:300])
        out.append(c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=30_000)
    ap.add_argument("--prompt-bytes", type=int, default=2000)
    ap.add_argument("--no-path", action="store_true", help="skip the whole-path (tracepipe run) comparison")
    args = ap.parse_args()

    n_requests = max(1, args.spans // (TRACES_PER_REQUEST * 3))
    reqs = [make_request(TRACES_PER_REQUEST, seed=i, prompt_bytes=args.prompt_bytes) for i in range(n_requests)]
    spans = [s for r in reqs for s in decode_request(r)]
    print(f"workload: {len(spans)} spans (bench/workload.py), prompt {args.prompt_bytes} B, 10 attributes/span; "
          "rates in spans per CPU-second, shared machine: compare the ratios")

    default = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    procs = default["processors"]
    chain = default["service"]["pipelines"]["traces"]["processors"]
    without = [p for p in chain if not p.startswith("redact")]
    with_chain, without_chain = build(chain, procs), build(without, procs)
    with_r = without_r = 0.0
    for _ in range(3):  # alternated, best of each: the machine's load moves between runs
        with_r = max(with_r, rate(with_chain, spans, 1))
        without_r = max(without_r, rate(without_chain, spans, 1))
    print(f"chain  {chain}  {with_r:>10,.0f} spans/s")
    print(f"chain  {without}          {without_r:>10,.0f} spans/s")
    print(f"ratio  chain with / without default redaction = {with_r / without_r:.2f}")

    redact_only = build(["redact"], procs)
    escaped, url = with_prompt(spans, "json_escaped"), with_prompt(spans, "percent_url")
    plain = esc = pct = 0.0
    for _ in range(3):
        plain = max(plain, rate(redact_only, spans, 1))
        esc = max(esc, rate(redact_only, escaped, 1))
        pct = max(pct, rate(redact_only, url, 1))
    print(f"redact alone, plain prompts                 {plain:>10,.0f} spans/s")
    print(f"redact alone, prompt as \\u-escaped JSON      {esc:>10,.0f} spans/s  ratio to plain {esc / plain:.2f}")
    print(f"redact alone, + a percent-encoded URL        {pct:>10,.0f} spans/s  ratio to plain {pct / plain:.2f}")

    if args.no_path:
        return
    bodies = [r.SerializeToString() for r in reqs]
    n_spans = sum(spans_in(r) for r in reqs)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        no_redact = dict(default)
        no_redact["processors"] = {k: v for k, v in procs.items() if not k.startswith("redact")}
        no_redact["service"] = json.loads(json.dumps(default["service"]))
        no_redact["service"]["pipelines"]["traces"]["processors"] = without
        cfg_path = Path(tmp) / "no-redact.yaml"
        cfg_path.write_text(yaml.safe_dump(no_redact))
        for name, extra in (("default", ()), ("without redact", ("-c", str(cfg_path)))):
            p = start_pipeline(Path(tmp) / name.replace(" ", "-"), *extra)
            try:
                results[name] = asyncio.run(throughput(p, bodies, n_spans))
            finally:
                p.stop()
            r = results[name]
            print(f"path   tracepipe run, {name:<15} {r['per_core']:>10,.0f} spans/s per core ({r['cpu_s']:.1f} CPU s)")
    print(f"ratio  whole path with / without default redaction = "
          f"{results['default']['per_core'] / results['without redact']['per_core']:.2f}")


if __name__ == "__main__":
    main()

"""Replay testing: capture real LLM calls into a replay set, send them to another model or prompt,
compare cost, latency, tokens and answers side by side.

- `store`: the `tracepipe_replay_items` / `tracepipe_replay_results` tables next to the spans.
- `capture`: the filters of a set and the captured items, read from the stored spans.
- `pricing`: the cost of a call with the config's `cost` processor (genai-prices, overrides).
- `run`: the runner (aiohttp, bounded concurrency, retries with backoff, timeouts).
- `record`: each result as an OTLP span of service `replay/NAME`, sent to the pipeline's receiver.
- `compare`: per item and in total, the replay against the original.
"""

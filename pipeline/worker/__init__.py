"""The distributed worker: a faust-streaming app consuming the span topic in batches.

Kafka -> decode -> the same chain and sinks as the embedded runtime -> ack -> commit.
See `runtime.WorkerRuntime` for the lifecycle, `app` for the Faust agent, `cuts` for how
batch identities stay stable across redelivery, `state` for Faust-table-backed state.
"""

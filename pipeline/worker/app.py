"""The Faust app of the worker and its agent.

The agent consumes the span topic with Faust's documented manual-ack batching,
`stream.noack_take(max_batch_messages, within=service.batch.timeout)`: it yields events
that Faust never acks on its own. The runtime commits each batch's offsets itself once
every sink acknowledged it, then marks the messages done without acking them into Faust's
commit bookkeeping, which commits past a message that was never acked
(`tests/test_faust_ack_bookkeeping.py`, `pipeline.worker.faust_compat`). The group
settings (static membership, session, heartbeat and rebalance timeouts) go through Faust's
public `consumer_group_instance_id` and `broker_*` settings.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.worker.runtime import WorkerRuntime

log = logging.getLogger("tracepipe.worker")


def create_app(runtime: WorkerRuntime, partitions: int) -> Any:
    """A Faust app for `runtime`'s config: broker settings, security, the span topic."""
    import faust

    from pipeline.transport.kafka_common import faust_broker_settings
    from pipeline.worker.faust_compat import check_compatible

    check_compatible()  # fail at start, not silently mid-stream, on a Faust that changed its internals

    cfg = runtime.config
    k = cfg.transport.kafka
    settings: dict[str, Any] = {
        **faust_broker_settings(k),
        "web_enabled": False,  # tracepipe serves /healthz, /readyz and /metrics itself
        "store": "memory://",
        "topic_partitions": partitions,
        "topic_replication_factor": k.replication_factor,
        "topic_allow_declare": k.create_topics,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1 if k.acks == "all" else int(k.acks),
        "producer_compression_type": None if k.compression == "none" else k.compression,
        "broker_client_id": f"{k.client_id}-worker",
        "table_standby_replicas": 0,
        # Group membership (public Faust settings, passed through to aiokafka's consumer): a static
        # member (group_instance_id) that restarts within session_timeout takes its partitions
        # back without a rebalance; a dead dynamic one is dropped after session_timeout.
        "broker_session_timeout": k.session_timeout,
        "broker_heartbeat_interval": k.heartbeat_interval,
        "broker_rebalance_timeout": k.rebalance_timeout,
        "consumer_group_instance_id": k.group_instance_id,
    }
    settings.update(k.worker_options)
    return faust.App(k.group_id, **settings)


def add_span_agent(app: Any, runtime: WorkerRuntime) -> Any:
    k = runtime.config.transport.kafka
    topic = app.topic(k.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    max_messages = k.max_batch_messages
    within = max(runtime.config.service.batch.timeout, 0.01)

    async def consume_spans(stream: Any) -> None:
        async for events in stream.noack_take(max_messages, within=within):
            await runtime.handle_events(events)

    return app.agent(topic, name="tracepipe-spans")(consume_spans)

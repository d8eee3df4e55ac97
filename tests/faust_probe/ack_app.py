"""A Faust app that uses only Faust's documented manual-ack model (`noack_take`, `Stream.ack`)
and leaves chosen messages of its partition un-acked, the way a worker holding spans
(tail sampling) or waiting on a slow sink would. Run by tests/test_faust_ack_bookkeeping.py:

    python ack_app.py worker -l warn --web-port PORT

Env: PROBE_BROKER (host:port), PROBE_TOPIC, PROBE_SKIP (offsets never acked, comma-separated), PROBE_PHASE
(acks what comes before the skipped offsets first, waits PROBE_PHASE seconds so Faust commits it,
then acks the rest), PROBE_DONE (file written once every message but the skipped one was acked).
"""

import asyncio
import os
from pathlib import Path

import faust

TOPIC = os.environ["PROBE_TOPIC"]
SKIP = {int(o) for o in os.environ["PROBE_SKIP"].split(",")}
PHASE = float(os.environ.get("PROBE_PHASE", "0"))
TOTAL = int(os.environ["PROBE_TOTAL"])

app = faust.App(f"{TOPIC}-group", broker=f"kafka://{os.environ['PROBE_BROKER']}", store="memory://",
                web_enabled=False, topic_partitions=1, consumer_auto_offset_reset="earliest",
                broker_commit_interval=0.2, broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
                broker_heartbeat_interval=1.0, producer_linger_ms=0)
topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                  partitions=1)


@app.agent(topic)
async def consume(stream):  # type: ignore[no-untyped-def]
    seen = 0
    async for events in stream.noack_take(TOTAL, within=0.5):
        for ev in events:
            seen += 1
            if ev.message.offset in SKIP:
                continue  # held: never acked
            if PHASE and ev.message.offset == max(SKIP) + 1:
                await asyncio.sleep(PHASE)  # everything before SKIP was acked: let Faust commit it
            await stream.ack(ev)
        if seen >= TOTAL:
            Path(os.environ["PROBE_DONE"]).write_text(str(seen))


if __name__ == "__main__":
    app.main()

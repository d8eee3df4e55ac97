"""`tracepipe receiver` and `tracepipe worker`: the two roles of the distributed runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from pipeline.cli.options import config_options, endpoint_options, load_or_exit
from pipeline.config import Config
from pipeline.gc_tuning import tune_gc
from pipeline.logs import setup_logging
from pipeline.memory import RECEIVER_MMAP_THRESHOLD_BYTES, tune_allocator


def _load(config_path: str | None, role: str, **overrides: Any) -> Config:
    cfg = load_or_exit(config_path, **overrides)
    if cfg.transport.type != "kafka":
        click.echo(f"tracepipe {role}: this config uses transport.type {cfg.transport.type!r}; the distributed "
                   "roles need `transport: {type: kafka}` (see config/distributed.yaml), or use `tracepipe run`",
                   err=True)
        sys.exit(2)
    return cfg


_log_options = [
    click.option("--log-format", type=click.Choice(["text", "json"]), help="Override service.log.format."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                 help="Override service.log.level."),
]


def _with_log_options(fn: Any) -> Any:
    for opt in reversed(_log_options):
        fn = opt(fn)
    return fn


@click.command()
@config_options
@endpoint_options("otlp_grpc", "otlp_http", "api", "metrics")
@_with_log_options
def receiver(config_path: str | None, data_dir: str | None, otlp_grpc: str | None, otlp_http: str | None,
             api: str | None, metrics: str | None, log_format: str | None, log_level: str | None) -> None:
    """Run an OTLP receiver that produces to Kafka (distributed mode).

    Answers OTLP success once Kafka acknowledged the data (acks=all); when Kafka is slow
    or down, clients get retryable codes. Stateless: start as many as you need.
    """
    cfg = _load(config_path, "receiver", data_dir=data_dir, otlp_grpc=otlp_grpc, otlp_http=otlp_http,
                api=api, metrics=metrics)
    setup_logging(log_level or cfg.service.log.level, log_format or cfg.service.log.format)
    tune_allocator(RECEIVER_MMAP_THRESHOLD_BYTES)  # large requests give their memory back (pipeline/memory.py)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(cfg, "receiver"))


@click.command()
@config_options
@endpoint_options("api", "metrics")
@_with_log_options
def worker(config_path: str | None, data_dir: str | None, api: str | None, metrics: str | None,
           log_format: str | None, log_level: str | None) -> None:
    """Run a worker: consume the span topic, run the chain, write the sinks (distributed mode).

    A faust-streaming app in the consumer group `transport.kafka.group_id`; offsets are
    committed only after every sink acknowledged. Start more to scale (up to one per
    partition). Set TRACEPIPE_GROUP_INSTANCE_ID (shipped config) to a stable, unique id per
    worker for static group membership: a restart resumes its partitions without waiting
    for the old member's session timeout.
    SIGTERM/SIGINT stop it within transport.kafka.stop_timeout, also while it joins the group.
    """
    cfg = _load(config_path, "worker", data_dir=data_dir, api=api, metrics=metrics)
    setup_logging(log_level or cfg.service.log.level, log_format or cfg.service.log.format)
    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(_serve(cfg, "worker"))
    # Stopped in order (batch committed or left for redelivery, sinks closed): exit now rather than
    # wait seconds for library threads (Faust's consumer thread, chDB) to wind down at interpreter exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


SHUTDOWN_GRACE = 4.0  # seconds past transport.kafka.stop_timeout before a stuck shutdown is cut short


def _exit_if_stuck(seconds: float, code: int) -> None:
    """Exit the process from a timer thread if shutdown has not finished within `seconds` (a close
    that blocks, or an event loop that does): a supervisor waiting on SIGTERM is never kept waiting
    much past stop_timeout. Nothing acknowledged is lost: what was not committed is redelivered."""

    def force() -> None:
        logging.getLogger("tracepipe").error(
            "shutdown did not finish within %.0fs; exiting now (what was not committed is redelivered)", seconds)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


async def _serve(cfg: Config, role: str) -> int:
    """Run `role` until SIGTERM/SIGINT (exit code 0) or, for a worker, until its Faust app crashed
    (exit code 1: a supervisor restarts it; what it did not commit is redelivered)."""
    log = logging.getLogger("tracepipe")
    runtime: Any
    if role == "receiver":
        from pipeline.receiver_runtime import ReceiverRuntime

        runtime = ReceiverRuntime(cfg)
    else:
        from pipeline.worker.runtime import WorkerRuntime

        runtime = WorkerRuntime(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # SIGTERM is honoured while starting too (connecting, joining the group): the start is cancelled
    # and what it opened is closed.
    starting = asyncio.ensure_future(runtime.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    grace = cfg.transport.kafka.stop_timeout + SHUTDOWN_GRACE
    if not starting.done():
        log.info("shutting down while starting")
        _exit_if_stuck(grace, 0)
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await runtime.stop()
        log.info("stopped")
        return 0
    stopping.cancel()
    try:
        ep = starting.result()
    except Exception as e:
        log.error("tracepipe %s failed to start: %s", role, e)
        raise SystemExit(1) from None
    tune_gc()  # fewer cyclic collections on the hot path (pipeline/gc_tuning.py)
    logs_consumer: Any = None
    if role == "worker":  # OTLP logs from the receivers: otlp_logs -> redact -> otel_logs
        from pipeline.logs_consumer import start_logs_consumer

        try:
            logs_consumer = await start_logs_consumer(cfg, runtime.chain, runtime.telemetry)
        except Exception as e:
            log.error("tracepipe worker: the logs consumer failed to start: %s", e)
            await runtime.stop()
            raise SystemExit(1) from None
    k = cfg.transport.kafka
    if role == "receiver":
        log.info("tracepipe receiver running: OTLP gRPC %s, OTLP HTTP %s -> Kafka %s topic %s; API %s, metrics %s",
                 ep.otlp_grpc or "off", ep.otlp_http or "off", k.brokers, k.topic, ep.api or "off",
                 ep.metrics or "off")
    else:
        log.info("tracepipe worker running: Kafka %s topic %s group %s; API %s, metrics %s",
                 k.brokers, k.topic, k.group_id, ep.get("api", "off"), ep.get("metrics", "off"))
    waits = [asyncio.ensure_future(stop.wait())]
    failed: asyncio.Event | None = getattr(runtime, "failed", None)
    if failed is not None:
        waits.append(asyncio.ensure_future(failed.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    code = 1 if failed is not None and failed.is_set() else 0
    log.info("shutting down" if not code else f"shutting down: {runtime.failure}")
    _exit_if_stuck(grace, code)
    if logs_consumer is not None:
        await logs_consumer.stop()
    await runtime.stop()
    log.info("stopped")
    return code


def register(group: click.Group) -> None:
    group.add_command(receiver)
    group.add_command(worker)

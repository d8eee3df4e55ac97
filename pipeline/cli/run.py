"""`tracepipe run`: the embedded pipeline in one process (the default, zero config)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import click

from pipeline.cli.options import config_options, endpoint_options, load_or_exit
from pipeline.config import Config
from pipeline.gc_tuning import tune_gc
from pipeline.logs import setup_logging
from pipeline.memory import tune_allocator


@click.command()
@config_options
@endpoint_options("otlp_grpc", "otlp_http", "api", "metrics")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Override service.log.format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Override service.log.level.")
def run(config_path: str | None, data_dir: str | None, otlp_grpc: str | None, otlp_http: str | None,
        api: str | None, metrics: str | None, log_format: str | None, log_level: str | None) -> None:
    """Run the embedded pipeline: OTLP receivers, in-process queue, processor chain, chDB.

    With no options it listens on localhost (OTLP gRPC 4317, HTTP 4318, API 8081,
    /metrics 9464) and keeps its data in ./tracepipe-data. Acknowledged spans are kept in a
    write-ahead log under DATA_DIR/wal and replayed after a crash. Stop with Ctrl-C: queued
    spans are drained to the sinks before it exits.
    """
    cfg = load_or_exit(config_path, data_dir=data_dir, otlp_grpc=otlp_grpc, otlp_http=otlp_http,
                       api=api, metrics=metrics)
    if cfg.transport.type != "memory":
        click.echo("tracepipe run: this config uses transport.type "
                   f"{cfg.transport.type!r}; run `tracepipe receiver` and `tracepipe worker` instead", err=True)
        sys.exit(2)
    setup_logging(log_level or cfg.service.log.level, log_format or cfg.service.log.format)
    tune_allocator()  # large requests give their memory back (pipeline/memory.py)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(cfg))


async def _run(cfg: Config) -> None:
    from pipeline.embedded import EmbeddedRuntime

    log = logging.getLogger("tracepipe")
    runtime = EmbeddedRuntime(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ep = await runtime.start()
    except Exception as e:
        log.error("tracepipe failed to start: %s", e)
        raise SystemExit(1) from None
    tune_gc()  # fewer cyclic collections on the hot path (pipeline/gc_tuning.py)
    log.info(
        "tracepipe running (embedded): OTLP gRPC %s, OTLP HTTP %s, API %s, metrics %s, data in %s",
        ep.otlp_grpc or "off", ep.otlp_http or "off", ep.api or "off", ep.metrics or "off",
        cfg.data_dir.resolve(),
    )
    await stop.wait()
    log.info("shutting down: draining %d queued spans", runtime.transport.size)
    await runtime.stop()
    log.info("stopped")


def register(group: click.Group) -> None:
    group.add_command(run)

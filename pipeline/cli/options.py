"""Options shared by tracepipe commands: the config file and the common overrides."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from pipeline.config import Config, ConfigError, Overrides, load_config


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-c/--config and --data-dir: where the config and (embedded) data are."""

    @click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                  help="YAML config file (default: the embedded default, see config/embedded.yaml).")
    @click.option("--data-dir", type=click.Path(file_okay=False),
                  help="Directory for embedded data (overrides service.data_dir; default ./tracepipe-data).")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def endpoint_options(*which: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Endpoint override flags; `which` picks among otlp_grpc, otlp_http, api, metrics."""
    helps = {
        "otlp_grpc": ("--otlp-grpc", "HOST:PORT for OTLP/gRPC (default 127.0.0.1:4317; 'off' disables)."),
        "otlp_http": ("--otlp-http", "HOST:PORT for OTLP/HTTP (default 127.0.0.1:4318; 'off' disables)."),
        "api": ("--api", "HOST:PORT for the query API and health probes (default 127.0.0.1:8081; 'off')."),
        "metrics": ("--metrics", "HOST:PORT for Prometheus /metrics (default 127.0.0.1:9464; 'off')."),
    }

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in reversed(which):
            flag, text = helps[key]
            fn = click.option(flag, key, metavar="HOST:PORT", help=text)(fn)
        return fn

    return deco


def load_or_exit(config_path: str | None, **overrides: str | None) -> Config:
    """Load and validate the config; on error print every problem and exit with status 2."""
    try:
        return load_config(config_path, Overrides(**overrides))
    except ConfigError as e:
        click.echo(f"tracepipe: {e}", err=True)
        sys.exit(2)

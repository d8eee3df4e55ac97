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


TOKEN_META = "tracepipe.token"


def token_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--token (or TRACEPIPE_TOKEN): the bearer token sent to the pipeline's API."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.meta[TOKEN_META] = value

    return click.option("--token", metavar="TOKEN", envvar="TRACEPIPE_TOKEN", expose_value=False,
                        callback=remember, show_envvar=True,
                        help="Bearer token for the API when it has auth (a `read` token); prefer the environment "
                             "variable: command lines are visible to other local users.")(fn)


def current_token() -> str | None:
    """The token given by --token / TRACEPIPE_TOKEN to the running command, if any."""
    import os

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(TOKEN_META):
        return str(ctx.meta[TOKEN_META])
    return os.environ.get("TRACEPIPE_TOKEN") or None


def load_or_exit(config_path: str | None, **overrides: str | None) -> Config:
    """Load and validate the config; on error print every problem and exit with status 2."""
    try:
        return load_config(config_path, Overrides(**overrides))
    except ConfigError as e:
        click.echo(f"tracepipe: {e}", err=True)
        sys.exit(2)

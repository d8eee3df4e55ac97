"""`tracepipe validate`: check a config file and name the YAML path of every error."""

from __future__ import annotations

import sys

import click

from pipeline.config import ConfigError, load_config


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config to check (default: the embedded default).")
def validate(config_path: str | None) -> None:
    """Validate a config as a whole: every error is listed with its YAML path.

    Exit status 0 when valid, 2 when not.
    """
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    pipes = ", ".join(
        f"{name} ({len(p.processors)} processors -> {', '.join(p.sinks)})" for name, p in cfg.service.pipelines.items()
    )
    click.echo(f"{cfg.source}: valid. pipelines: {pipes}")


def register(group: click.Group) -> None:
    group.add_command(validate)

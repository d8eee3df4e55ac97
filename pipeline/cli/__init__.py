"""The `tracepipe` command line.

Each area has a module in this package exposing `register(group: click.Group)`, listed
in `_COMMAND_MODULES`. Shared options (-c, --data-dir, endpoint overrides) come from
`pipeline.cli.options`.
"""

from __future__ import annotations

import importlib

import click

from pipeline import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tracepipe")
def main() -> None:
    """tracepipe: an OpenTelemetry-Collector-style stream processor for LLM / GenAI telemetry.

    Receives OTLP spans, runs the processor chain from your YAML (normalize, cost, ...)
    and stores them in ClickHouse (chDB embedded by default), with Prometheus metrics and
    a query API. Start with `tracepipe run`.
    """


# Command modules registered here: one line per area.
_COMMAND_MODULES: list[str] = [
    "run",
    "validate",
    "query",
    "forget",
    "budgets",
    "distributed",
    "alerts",
    "dead_letter",
    "token",
    "sessions",
    "quality",
    "replay",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(f"pipeline.cli.{_name}").register(main)

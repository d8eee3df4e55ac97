"""`tracepipe quality`: cost versus mean score per model, feature or prompt version.

Asks the running pipeline (GET /api/quality) and, when nothing answers, opens the data itself,
like `tracepipe cost`.
"""

from __future__ import annotations

import json

import click

from pipeline.cli.options import config_options, load_or_exit
from pipeline.cli.query import _fetch, api_option

# pipeline.query.scores.QUALITY_DIMENSIONS (not imported: it would load the query layer at CLI start)
QUALITY_DIMENSIONS = ("model", "feature", "prompt_version", "service")


@click.command()
@config_options
@api_option
@click.option("--by", "by", type=click.Choice(list(QUALITY_DIMENSIONS)), default="model", show_default=True,
              help="Group by model, feature, prompt version (span attribute gen_ai.prompt.version) or service.")
@click.option("--name", help="Average only this score name (default: every numeric score).")
@click.option("--since", default="7d", show_default=True, help="Traces started within this window, e.g. 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def quality(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None, by: str,
            name: str | None, since: str, as_json: bool) -> None:
    """Cost versus quality: traces, cost, cost per trace and mean score per group."""
    from pipeline.query.render import render_quality

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    rows = _fetch(cfg, api_url, "/api/quality", {"by": by, "name": name, "since": since}, "quality_by", by, name,
                  since=since)
    click.echo(json.dumps(rows, indent=2) if as_json else render_quality(rows or [], by))


def register(group: click.Group) -> None:
    group.add_command(quality)

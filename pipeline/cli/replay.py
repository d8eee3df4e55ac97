"""`tracepipe replay create|list|show|run|compare`: replay real LLM calls against another model or prompt.

`create`, `list`, `show` and `compare` ask the running pipeline (/api/replay/...) and, when nothing
answers, open the data themselves, like `tracepipe traces`. `run` needs the running pipeline: it
records each replayed call as a trace through the pipeline's OTLP/HTTP receiver and posts the run's
results to its API.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from pipeline.cli.api_client import api_request, ask_or_open
from pipeline.cli.options import config_options, current_token, endpoint_options, load_or_exit
from pipeline.cli.query import api_option
from pipeline.cli.style import color_option, current_term
from pipeline.config import Config

DEFAULT_LIMIT = 100  # pipeline.replay.capture.DEFAULT_LIMIT (not imported: it loads the query layer)
RESULTS_PER_POST = 1000


def _tenant_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--tenant", help="The tenant whose replay sets these are: an admin token may name any; "
                                          "when the CLI opens the data itself, default `default`.")(fn)


def _open_local(cfg: Config, fn: Callable[..., Any], *args: Any) -> Any:
    """`await fn(queries, *args)` over the config's store (no pipeline runs)."""
    from pipeline.runtime_support import open_queries

    async def go() -> Any:
        queries = await open_queries(cfg)
        if queries is None:
            raise click.ClickException("this config has no clickhouse sink to query")
        try:
            return await fn(queries, *args)
        finally:
            await queries.close()

    return asyncio.run(go())


def _ask(cfg: Config, method: str, path: str, params: dict[str, Any], api_url: str | None,
         local: Callable[[], Any], body: Any = None) -> Any:
    return ask_or_open(lambda: api_request(cfg, method, path, params, api_url, body=body, timeout=300)[1],
                       local, api_url)


def _pipeline_gone() -> Any:
    raise click.ClickException("the pipeline's API stopped answering during the replay")


@click.group()
def replay() -> None:
    """Capture real LLM calls into a replay set, replay them against another model or prompt, compare."""


@replay.command("create")
@click.argument("name")
@config_options
@api_option
@_tenant_option
@click.option("--service", help="Only calls of this service (service.name).")
@click.option("--model", help="Only calls of this model (request or response model).")
@click.option("--feature", help="Only calls of this feature (app.feature).")
@click.option("--since", help="Only calls within this window, e.g. 24h, 7d.")
@click.option("--from", "from_", metavar="TIME", help="Only calls at or after this ISO 8601 time (UTC if no zone).")
@click.option("--until", metavar="TIME", help="Only calls before this ISO 8601 time.")
@click.option("--score-below", type=float, help="Only calls of traces whose mean numeric score is below this.")
@click.option("--score-name", help="With --score-below: average only this score name.")
@click.option("--limit", type=click.IntRange(1, 1000), default=DEFAULT_LIMIT, show_default=True,
              help="Capture at most this many calls, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def create(name: str, config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
           tenant: str | None, service: str | None, model: str | None, feature: str | None, since: str | None,
           from_: str | None, until: str | None, score_below: float | None, score_name: str | None, limit: int,
           as_json: bool) -> None:
    """Capture the inputs and answers of matching stored LLM calls into the replay set NAME (with auth:
    a token with the read and ingest scopes)."""
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    body = {"name": name, "service": service, "model": model, "feature": feature, "since": since, "from": from_,
            "until": until, "score_below": score_below, "score_name": score_name, "limit": limit}
    body = {k: v for k, v in body.items() if v is not None}

    async def local(queries: Any) -> Any:
        from pipeline.replay.capture import validate_create
        from pipeline.replay.sets import create_set

        set_name, filters = validate_create(body)
        return await create_set(queries, tenant or "default", set_name, filters)

    created = _ask(cfg, "POST", "/api/replay/sets", {"tenant": tenant}, api_url, lambda: _open_local(cfg, local),
                   body=body)
    if as_json:
        click.echo(json.dumps(created, indent=2))
        return
    from pipeline.query.render import fmt_usd

    models = ", ".join(m for m in created["models"] if m) or "-"
    click.echo(f"replay set {created['name']}: captured {created['items']} calls ({models}),"
               f" original cost {fmt_usd(created['original_cost_usd'])}")


@replay.command("list")
@config_options
@api_option
@_tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@color_option
def list_sets(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
              tenant: str | None, as_json: bool) -> None:
    """The replay sets: items, models, original cost, runs, filters."""
    from pipeline.query.render_replay import render_sets
    from pipeline.replay.store import list_sets as stored_sets

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    rows = _ask(cfg, "GET", "/api/replay/sets", {"tenant": tenant}, api_url,
                lambda: _open_local(cfg, stored_sets, tenant or "default"))
    click.echo(json.dumps(rows, indent=2) if as_json else render_sets(rows, current_term()))


def _get_set(cfg: Config, name: str, tenant: str | None, api_url: str | None, *,
             local: bool = True) -> dict[str, Any]:
    from pipeline.replay.store import get_set

    def open_locally() -> Any:
        if not local:
            raise click.ClickException(
                "replay run records its results through the running pipeline (tracepipe run): nothing answers"
                " at its API (pass --api or --api-url)")
        return _open_local(cfg, get_set, tenant or "default", name)

    found = _ask(cfg, "GET", f"/api/replay/sets/{name}", {"tenant": tenant}, api_url, open_locally)
    if found is None:
        raise click.ClickException(f"replay set {name} not found")
    return found  # type: ignore[no-any-return]


@replay.command("show")
@click.argument("name")
@config_options
@api_option
@_tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON (with every message).")
@color_option
def show(name: str, config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
         tenant: str | None, as_json: bool) -> None:
    """The items of the replay set NAME (trace, model, tokens, cost, latency, last prompt) and its runs."""
    from pipeline.query.render_replay import render_set

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    found = _get_set(cfg, name, tenant, api_url)
    click.echo(json.dumps(found, indent=2) if as_json else render_set(found, current_term()))


def _estimate(items: list[dict[str, Any]], model: str, provider: str | None, system_prompt: str | None,
              pricer: Any) -> tuple[float | None, int]:
    """(estimated cost, calls left unpriced): each item's original token counts (input adjusted by a
    replaced system prompt at ~4 characters a token) priced for `model`, without cache discounts."""
    calls = []
    for it in items:
        inp = it["input_tokens"] or sum(len(m["content"]) for m in it["input_messages"]) // 4
        if system_prompt is not None:
            old = sum(len(m["content"]) for m in it["input_messages"] if m["role"] == "system")
            inp = max(1, inp + (len(system_prompt) - old) // 4)
        out = it["output_tokens"] or max(1, len(it["original_output"]) // 4)
        calls.append({"model": model, "provider": provider, "input_tokens": inp, "output_tokens": out})
    costs = pricer.costs(calls, time.time_ns())
    priced = [c for c in costs if c is not None]
    return (sum(priced) if priced else None), len(costs) - len(priced)


@replay.command("run")
@click.argument("name")
@config_options
@api_option
@endpoint_options("otlp_http")
@_tenant_option
@click.option("--endpoint", "endpoint", required=True, metavar="URL",
              help="OpenAI-compatible API base URL, as the OpenAI SDK's base_url (e.g. https://api.openai.com/v1); "
                   "requests go to URL/chat/completions.")
@click.option("--model", required=True, help="The model to replay against (the request's `model`).")
@click.option("--system-prompt-file", type=click.File("r", encoding="utf-8"),
              help="Replace each call's system messages with this file's text.")
@click.option("--provider", help="gen_ai.provider.name of the endpoint (e.g. openai), for pricing; "
                                 "default: found from the model name.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="VAR",
              help="Environment variable holding the endpoint's API key (sent as a bearer token if set).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Requests in flight at most.")
@click.option("--retries", type=click.IntRange(0, 10), default=3, show_default=True,
              help="Retries of a call answered 408/409/429/5xx, timed out or not connected (exponential backoff, "
                   "Retry-After honoured).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds per request.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="max_tokens sent with each request.")
@click.option("--otlp-url", metavar="URL", help="The pipeline's OTLP/HTTP receiver for the replay traces "
                                                 "(default: the config's receivers.otlp.http).")
@click.option("--yes", is_flag=True, help="Send the requests. Without it the cost estimate is printed and "
                                          "nothing is sent.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@color_option
def run(name: str, config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
        otlp_http: str | None, tenant: str | None, endpoint: str, model: str, system_prompt_file: Any,
        provider: str | None, api_key_env: str, concurrency: int, retries: int, timeout: float,
        max_tokens: int | None, otlp_url: str | None, yes: bool, as_json: bool) -> None:
    """Send the calls of the replay set NAME to --endpoint with --model, record each as a trace of
    service replay/NAME and print the comparison. Prints a cost estimate first and sends nothing
    without --yes. Needs the running pipeline and, with auth, a token with the read and ingest scopes."""
    from pipeline.query.render_replay import render_compare, render_estimate
    from pipeline.replay.compare import judge
    from pipeline.replay.pricing import Pricer
    from pipeline.replay.record import otlp_http_url, replay_resource, result_span, send_spans
    from pipeline.replay.run import RunSettings, run_items

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api, otlp_http=otlp_http)
    system_prompt = system_prompt_file.read() if system_prompt_file is not None else None
    found = _get_set(cfg, name, tenant, api_url, local=False)
    items = found["items"]
    pricer = Pricer.from_config(cfg)
    estimate, unpriced = _estimate(items, model, provider, system_prompt, pricer)
    click.echo(render_estimate({"set": name, "items": len(items), "model": model, "endpoint": endpoint,
                                "estimated_cost_usd": estimate, "unpriced": unpriced,
                                "original_cost_usd": found["original_cost_usd"]}), err=as_json)
    if not yes:
        click.echo(f"tracepipe: not sending {len(items)} requests without --yes", err=True)
        sys.exit(1)
    try:
        url = otlp_http_url(cfg, otlp_url)
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    settings = RunSettings(endpoint, model, os.environ.get(api_key_env) or None, system_prompt, concurrency,
                           retries, timeout, max_tokens=max_tokens)
    results = asyncio.run(run_items(items, settings))
    ok = [r for r in results if r["error"] is None]
    costs = pricer.costs([{"model": r["model"], "response_model": r["response_model"], "provider": provider,
                           "input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"],
                           "cache_read_tokens": r["cache_read_tokens"]} for r in ok], time.time_ns())
    for r, c in zip(ok, costs, strict=True):
        r["cost_usd"] = c
    by_item = {it["item"]: it for it in items}
    for r, (exact, sim) in zip(results, judge([(by_item[r["item"]]["original_output"], r["output"])
                                               for r in results]), strict=True):
        r["exact_match"], r["similarity"] = exact, sim
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    resource = replay_resource(name)
    spans = [result_span(name, run_id, by_item[r["item"]], r, resource, provider) for r in results]
    try:
        send_spans(url, spans, current_token())
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    keys = ("item", "model", "response_model", "output", "input_tokens", "output_tokens", "cache_read_tokens",
            "cost_usd", "duration_ns", "attempts", "error", "exact_match", "similarity", "trace_id", "span_id")
    rows = [{k: r.get(k) for k in keys} | {"system_prompt": system_prompt} for r in results]
    for i in range(0, len(rows), RESULTS_PER_POST):
        _ask(cfg, "POST", f"/api/replay/sets/{name}/results", {"tenant": tenant}, api_url,
             _pipeline_gone,
             body={"run_id": run_id, "results": rows[i : i + RESULTS_PER_POST]})
    compared = _ask(cfg, "GET", f"/api/replay/sets/{name}/compare", {"run": run_id, "tenant": tenant}, api_url,
                    _pipeline_gone)
    click.echo(json.dumps(compared, indent=2) if as_json else render_compare(compared, current_term()))
    if not ok:
        sys.exit(1)


@replay.command("compare")
@click.argument("name")
@config_options
@api_option
@_tenant_option
@click.option("--run", "run_id", help="The run to compare (default: the latest; see `tracepipe replay show`).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@color_option
def compare(name: str, config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
            tenant: str | None, run_id: str | None, as_json: bool) -> None:
    """Per item and in total: cost, latency, tokens, exact match and semantic similarity of a run of the
    replay set NAME against the original calls (deltas are replay minus original)."""
    from pipeline.query.render_replay import render_compare
    from pipeline.replay.sets import compare_set

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    result = _ask(cfg, "GET", f"/api/replay/sets/{name}/compare", {"run": run_id, "tenant": tenant}, api_url,
                  lambda: _open_local(cfg, compare_set, tenant or "default", name, run_id))
    if result is None:
        raise click.ClickException(f"replay set {name} not found")
    click.echo(json.dumps(result, indent=2) if as_json else render_compare(result, current_term()))


def register(group: click.Group) -> None:
    group.add_command(replay)

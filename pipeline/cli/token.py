"""`tracepipe token create`: a new random bearer token and the config lines that accept it."""

from __future__ import annotations

import click

from pipeline.auth.principal import SCOPES
from pipeline.auth.tokens import new_token, token_sha256


def _scopes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    scopes = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(SCOPES)}; got {value!r}")
    return list(dict.fromkeys(scopes))


def register(group: click.Group) -> None:
    @group.group("token")
    def token() -> None:
        """Bearer tokens for the `auth:` section (OTLP receivers, query API, /metrics)."""

    @token.command("create")
    @click.option("--tenant", required=True, help="Tenant that owns what this token sends / may read.")
    @click.option("--scopes", required=True, callback=_scopes, metavar="SCOPES",
                  help="Comma-separated: ingest (send spans), read (query API), admin (all tenants, deletes).")
    @click.option("--id", "token_id", metavar="NAME", help="A name for the token, shown in logs instead of it.")
    def create(tenant: str, scopes: list[str], token_id: str | None) -> None:
        """Print a new random token and the YAML lines to add under `auth.tokens`.

        Only the token's SHA-256 goes into the config; the token itself is shown once, here.
        Clients send it as `Authorization: Bearer <token>`, e.g.
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>".
        """
        value = new_token()
        click.echo(f"token: {value}")
        click.echo("# keep the token secret; add these lines under `auth: tokens:` in your config:")
        click.echo(f"  - sha256: {token_sha256(value)}")
        if token_id:
            click.echo(f"    id: {token_id}")
        click.echo(f"    tenant: {tenant}")
        click.echo(f"    scopes: [{', '.join(scopes)}]")

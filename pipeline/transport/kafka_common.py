"""Kafka settings shared by the receiver (aiokafka producer) and the worker (Faust app).

- `client_kwargs(cfg)`: bootstrap servers, client id and security (SASL/PLAIN, SCRAM,
  TLS) as aiokafka keyword arguments.
- `faust_broker_settings(cfg)`: the same, as Faust app settings (`broker`,
  `broker_credentials`).
- `ensure_topics(cfg, {name: partitions})`: create missing topics at start (or, with
  `create_topics: false`, verify they exist) and return their actual partition counts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from pipeline.config import KafkaSecurityConfig, KafkaTransportConfig

log = logging.getLogger("tracepipe.kafka")

TOPIC_ALREADY_EXISTS = 36


class KafkaSetupError(RuntimeError):
    """Kafka is not usable as configured (unreachable, topic missing, bad credentials)."""


def brokers_of(cfg: KafkaTransportConfig) -> list[str]:
    return [b.strip() for b in cfg.brokers.split(",") if b.strip()]


def ssl_context(sec: KafkaSecurityConfig) -> ssl.SSLContext | None:
    if sec.protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    ctx = create_ssl_context(cafile=sec.ssl_cafile, certfile=sec.ssl_certfile, keyfile=sec.ssl_keyfile)
    ctx.check_hostname = sec.ssl_check_hostname
    return ctx


def security_kwargs(sec: KafkaSecurityConfig) -> dict[str, Any]:
    """aiokafka keyword arguments for `transport.kafka.security`."""
    out: dict[str, Any] = {"security_protocol": sec.protocol}
    ctx = ssl_context(sec)
    if ctx is not None:
        out["ssl_context"] = ctx
    if sec.protocol.startswith("SASL"):
        out["sasl_mechanism"] = sec.sasl_mechanism or "PLAIN"
        out["sasl_plain_username"] = sec.sasl_username
        out["sasl_plain_password"] = sec.sasl_password
    return out


def client_kwargs(cfg: KafkaTransportConfig, role: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": brokers_of(cfg),
        "client_id": f"{cfg.client_id}-{role}",
        **security_kwargs(cfg.security),
    }


def faust_broker_settings(cfg: KafkaTransportConfig) -> dict[str, Any]:
    """Faust `broker` and `broker_credentials` for the same cluster and security settings."""
    import faust

    sec = cfg.security
    settings: dict[str, Any] = {"broker": [f"kafka://{b}" for b in brokers_of(cfg)]}
    ctx = ssl_context(sec)
    if sec.protocol.startswith("SASL"):
        mechanism = (sec.sasl_mechanism or "PLAIN").replace("-", "_")
        settings["broker_credentials"] = faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password,
            mechanism=getattr(faust.types.auth.SASLMechanism, mechanism),
            ssl_context=ctx,
        )
    elif ctx is not None:
        settings["broker_credentials"] = faust.SSLCredentials(ctx)
    return settings


async def ensure_topics(cfg: KafkaTransportConfig, topics: dict[str, int], timeout: float = 30.0) -> dict[str, int]:
    """Create (or verify) `topics` ({name: partitions wanted}); returns their actual partitions.

    An existing topic keeps its partition count (a different count is logged, not changed:
    repartitioning would move traces between partitions)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**client_kwargs(cfg, "admin"), request_timeout_ms=int(timeout * 1000))
    try:
        try:
            await asyncio.wait_for(admin.start(), timeout)
            existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        except (KafkaError, OSError, TimeoutError) as e:
            raise KafkaSetupError(f"cannot reach Kafka at {cfg.brokers}: {type(e).__name__}: {e}") from None
        missing = [name for name in topics if name not in existing]
        if missing and not cfg.create_topics:
            raise KafkaSetupError(
                f"topic(s) {', '.join(missing)} do not exist and transport.kafka.create_topics is false"
            )
        if missing:
            resp = await admin.create_topics(
                [NewTopic(name, topics[name], cfg.replication_factor) for name in missing]
            )
            for err in getattr(resp, "topic_errors", []):
                name, code, message = err[0], err[1], err[2] if len(err) > 2 else ""
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise KafkaSetupError(f"cannot create topic {name}: error {code} {message or ''}".strip())
            log.info("created topic(s) %s", ", ".join(f"{n} ({topics[n]} partitions)" for n in missing))
        described = await admin.describe_topics(list(topics))
        actual: dict[str, int] = {}
        for d in described:
            name = d["topic"]
            actual[name] = len(d.get("partitions") or [])
            if actual[name] == 0:
                raise KafkaSetupError(f"topic {name} has no partitions (error {d.get('error_code')})")
            if actual[name] != topics[name] and name not in missing:
                log.warning("topic %s has %d partitions (config asks %d); keeping it as it is",
                            name, actual[name], topics[name])
        return actual
    finally:
        await admin.close()

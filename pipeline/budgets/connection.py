"""Redis clients from a `RedisConfig`: plain URL, TLS, password, Sentinel or Cluster.

One function per flavour (async for the sink and the API, sync for the CLI and the
application guard) so every caller connects the same way.
"""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.budgets.config import RedisConfig, RedisSentinelConfig
from pipeline.config import parse_endpoint


def _common(cfg: RedisConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout,
        "socket_connect_timeout": cfg.connect_timeout,
        "decode_responses": True,
    }
    if cfg.username is not None:
        kw["username"] = cfg.username
    if cfg.password:
        kw["password"] = cfg.password
    if cfg.tls is not None:
        t = cfg.tls
        if not cfg.url.startswith("rediss://") and cfg.sentinel is None:
            kw["ssl"] = True
        kw["ssl_ca_certs"] = t.ca_file
        kw["ssl_certfile"] = t.cert_file
        kw["ssl_keyfile"] = t.key_file
        kw["ssl_check_hostname"] = t.check_hostname and t.verify
        kw["ssl_cert_reqs"] = ssl.CERT_REQUIRED if t.verify else ssl.CERT_NONE
    return kw


def _url_db_and_auth(url: str) -> dict[str, Any]:
    from redis.connection import parse_url

    parsed = parse_url(url)
    return {k: v for k, v in parsed.items() if k in ("db", "username", "password")}


def _sentinel_hosts(s: RedisSentinelConfig) -> list[tuple[str, int]]:
    return [parse_endpoint(h) for h in s.hosts]


def connect_async(cfg: RedisConfig) -> Any:
    """A redis.asyncio client (Redis, Sentinel master, or RedisCluster)."""
    kw = _common(cfg)
    if cfg.sentinel is not None:
        from redis.asyncio.sentinel import Sentinel

        skw = {"password": cfg.sentinel.password} if cfg.sentinel.password else {}
        sentinel = Sentinel(_sentinel_hosts(cfg.sentinel), sentinel_kwargs=skw, **kw)
        return sentinel.master_for(cfg.sentinel.service_name, **{**_url_db_and_auth(cfg.url), **kw})
    if cfg.cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(cfg.url, **kw)
    from redis.asyncio import Redis

    return Redis.from_url(cfg.url, **kw)


def connect_sync(cfg: RedisConfig) -> Any:
    """A blocking redis client (Redis, Sentinel master, or RedisCluster)."""
    kw = _common(cfg)
    if cfg.sentinel is not None:
        from redis.sentinel import Sentinel

        skw = {"password": cfg.sentinel.password} if cfg.sentinel.password else {}
        sentinel = Sentinel(_sentinel_hosts(cfg.sentinel), sentinel_kwargs=skw, **kw)
        return sentinel.master_for(cfg.sentinel.service_name, **{**_url_db_and_auth(cfg.url), **kw})
    if cfg.cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(cfg.url, **kw)
    from redis import Redis

    return Redis.from_url(cfg.url, **kw)

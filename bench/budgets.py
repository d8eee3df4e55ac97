"""Budget increments: throughput per core and the latency a budgets sink adds per batch.

For batches of GenAI spans (3 budgets: user/day, tenant+feature/month, global/month;
`--users` distinct users), prints:
- accounting alone (spans -> increments, pure Python): spans/s per core;
- the sink's write against a real redis-server (one Lua script call per batch) and
  against the local in-process store: batches/s, spans/s and counter increments/s per
  core of this process (CPU seconds, so Redis's own core is not charged), the Redis
  server's CPU per batch, and write latency p50/p99 per batch;
- the same with 8 concurrent writers sharing Redis (wall throughput).

    python bench/budgets.py [--batches 400] [--spans 500] [--users 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.budgets.accounting import Accountant
from pipeline.budgets.config import BudgetsSinkConfig
from pipeline.budgets.model import KeyLayout, build_budgets
from sinks.budgets import BudgetsSink
from tests.budget_helpers import T0, Clock, batch, context, llm_span
from tests.services.redis import start_local_redis


def config(url: str | None) -> BudgetsSinkConfig:
    raw: dict = {
        "key_prefix": f"bench{uuid.uuid4().hex[:6]}",
        "budgets": {
            "user_daily": {"scope": "user", "period": "day", "tiers": {"free": {"usd": 1}, "pro": {"usd": 10}}},
            "tenant_feature": {"scope": "tenant+feature", "period": "month", "limit": {"usd": 1000}},
            "global": {"scope": "global", "period": "month", "limit": {"usd": 100000}},
        },
    }
    raw["redis" if url else "local"] = {"url": url} if url else {"persist": False}
    return BudgetsSinkConfig.model_validate(raw)


def make_batches(n: int, spans: int, users: int) -> list:
    out = []
    for b in range(n):
        out.append(
            batch(
                [
                    llm_span(
                        cost=0.0004,
                        user=f"user-{(b * spans + i) % users}",
                        tier="pro" if i % 3 else "free",
                        tenant=f"tenant-{i % 20}",
                        feature=("chat", "search", "summarize")[i % 3],
                        end=T0 + b,
                    )
                    for i in range(spans)
                ]
            )
        )
    return out


def redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sink_run(url: str | None, batches: list, tmp: Path, redis_pid: int | None) -> dict[str, float]:
    clock = Clock(T0 + len(batches))
    sink = BudgetsSink("budgets", config(url), context(tmp), clock=clock)
    await sink.start()
    await sink.write(batches[0])  # warm up: connect, load the script
    lat: list[float] = []
    increments = 0
    r0 = redis_cpu(redis_pid) if redis_pid else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in batches[1:]:
        increments += len(sink.accountant.collect(b.spans, clock()))  # counted outside the timing below
    acc_cpu = time.process_time() - cpu0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in batches[1:]:
        t = time.perf_counter()
        await sink.write(b)
        lat.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server_cpu = (redis_cpu(redis_pid) - r0) if redis_pid else 0.0
    await sink.close()
    n = len(batches) - 1
    spans = sum(len(b) for b in batches[1:])
    q = statistics.quantiles(lat, n=100)
    return {
        "batches/s per core": n / cpu,
        "spans/s per core": spans / cpu,
        "increments/s per core": increments / cpu,
        "increments/batch": increments / n,
        "wall batches/s": n / wall,
        "p50 ms/batch": q[49] * 1e3,
        "p99 ms/batch": q[98] * 1e3,
        "accounting share of CPU": acc_cpu / cpu,
        "redis-server CPU ms/batch": server_cpu / n * 1e3,
    }


async def concurrent_run(url: str, batches: list, tmp: Path, writers: int = 8) -> dict[str, float]:
    clock = Clock(T0 + len(batches))
    cfg = config(url)
    sinks = [BudgetsSink(f"budgets/{i}", cfg, context(tmp), clock=clock) for i in range(writers)]
    for s in sinks:
        await s.start()
    chunks = [batches[i::writers] for i in range(writers)]

    async def go(s: BudgetsSink, bs: list) -> None:
        for b in bs:
            await s.write(b)

    t0 = time.perf_counter()
    await asyncio.gather(*(go(s, c) for s, c in zip(sinks, chunks, strict=True)))
    wall = time.perf_counter() - t0
    for s in sinks:
        await s.close()
    return {"wall batches/s": len(batches) / wall, "wall spans/s": sum(len(b) for b in batches) / wall}


def accounting_only(batches: list) -> float:
    cfg = config(None)
    acc = Accountant(build_budgets(cfg), KeyLayout(cfg.key_prefix))
    t0 = time.process_time()
    for b in batches:
        acc.collect(b.spans, T0 + len(batches))
    return sum(len(b) for b in batches) / (time.process_time() - t0)


def show(title: str, figures: dict[str, float]) -> None:
    print(title)
    for k, v in figures.items():
        print(f"  {k:<28} {v:>12,.2f}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--spans", type=int, default=500)
    ap.add_argument("--users", type=int, default=200)
    args = ap.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="tracepipe-bench-budgets-"))
    batches = make_batches(args.batches, args.spans, args.users)
    print(f"{args.batches} batches x {args.spans} spans, {args.users} users, 3 budgets")
    show("accounting only (spans -> increments)", {"spans/s per core": accounting_only(batches)})
    svc = start_local_redis()
    try:
        pid = svc.process.pid  # type: ignore[union-attr]
        show("budgets sink -> redis-server (one Lua call per batch)", await sink_run(svc.url, batches, tmp, pid))
        show("budgets sink -> local store", await sink_run(None, batches, tmp, None))
        show("8 concurrent sinks -> one redis-server", await concurrent_run(svc.url, batches, tmp))
    finally:
        svc.stop()


if __name__ == "__main__":
    asyncio.run(main())

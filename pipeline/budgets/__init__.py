"""Live budgets: per-scope spend and token counters in Redis (or in-process), and their enforcement.

- config.py     the budgets sink's config models (budgets, limits, tiers, Redis connection)
- periods.py    calendar periods in a time zone (zoneinfo)
- model.py      resolved budgets, limits, the Redis key layout, increments and results
- script.py     the Lua script applying one batch atomically and idempotently
- accounting.py spans -> increments (pure, batch-first)
- store.py      RedisBudgetStore and LocalBudgetStore (same semantics)
- connection.py Redis clients from config (URL, TLS, password, Sentinel, Cluster)
- status.py     the read side (spent, limit, remaining, reset per period)
- gauges.py     bounded-cardinality utilization gauges
- registry.py   `build_budget_store(config)` for runtimes, the API and the CLI
- guard.py      `BudgetGuard` for applications: check / decorator / context manager

The sink itself is sinks/budgets.py.
"""

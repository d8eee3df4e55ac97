"""tracepipe runtime: config, receivers, transport, chain runner, query API and CLI."""

__version__ = "0.1.0"

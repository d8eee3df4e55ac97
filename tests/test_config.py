"""Config loading: defaults, overrides, env substitution and YAML-path error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, Overrides, build_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def _errors(raw: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        build_config(raw, **kw)
    return ei.value.errors


def _minimal(**service) -> dict:
    return {"sinks": {"prometheus": {}}, "service": {"pipelines": {"traces": {"sinks": ["prometheus"]}}, **service}}


def test_embedded_default_loads_and_matches_the_documented_copy() -> None:
    cfg = load_config()
    assert cfg.transport.type == "memory"
    assert cfg.service.pipelines["traces"].processors == ["redact", "normalize", "context", "cost"]
    assert cfg.receivers["otlp"].config.grpc.endpoint == "127.0.0.1:4317"
    assert (ROOT / "config" / "embedded.yaml").read_text() == DEFAULT_CONFIG_PATH.read_text()


def test_overrides_replace_endpoints_and_data_dir() -> None:
    cfg = load_config(overrides=Overrides(data_dir="/tmp/x", otlp_grpc="127.0.0.1:1", otlp_http="off",
                                          api="127.0.0.1:2", metrics="off"))
    assert cfg.service.data_dir == "/tmp/x"
    assert cfg.receivers["otlp"].config.grpc.endpoint == "127.0.0.1:1"
    assert cfg.receivers["otlp"].config.http is None
    assert cfg.service.api.endpoint == "127.0.0.1:2"
    assert cfg.service.metrics.endpoint is None


def test_every_error_is_reported_with_its_yaml_path() -> None:
    raw = {
        "processors": {"nope": {}, "cost/strict": {"no_such_option": 1}},
        "sinks": {"prometheus": {}},
        "service": {
            "batch": {"max_spans": 0},
            "pipelines": {"traces": {"processors": ["cost/strict", "missing"], "sinks": ["prometheus", "ghost"]}},
        },
    }
    errors = _errors(raw)
    text = "\n".join(errors)
    assert "processors.nope: unknown processor type 'nope'" in text
    assert "processors.cost/strict.no_such_option: unknown option" in text
    assert any(e.startswith("service.batch.max_spans:") for e in errors)
    assert "service.pipelines.traces.processors[1]: processor 'missing' is not declared" in text
    assert "service.pipelines.traces.sinks[1]: sink 'ghost' is not declared" in text


def test_env_substitution_with_defaults_and_missing_variables() -> None:
    raw = _minimal(data_dir="${TP_DIR:-/tmp/default}", api={"endpoint": "${TP_API}"})
    cfg = build_config(raw, env={"TP_API": "127.0.0.1:7000"})
    assert cfg.service.data_dir == "/tmp/default" and cfg.service.api.endpoint == "127.0.0.1:7000"
    errors = _errors(raw, env={})
    assert errors[0] == "service.api.endpoint: environment variable TP_API is not set and has no default"


def test_pipeline_from_must_name_a_pipeline_without_cycles() -> None:
    raw = _minimal()
    raw["service"]["pipelines"] = {
        "a": {"from": "b", "sinks": ["prometheus"]},
        "b": {"from": "a", "sinks": ["prometheus"]},
        "c": {"from": "zzz", "sinks": ["prometheus"]},
    }
    text = "\n".join(_errors(raw))
    assert "service.pipelines.a.from: pipelines form a cycle" in text
    assert "service.pipelines.c.from: no pipeline named 'zzz'" in text


def test_bad_endpoint_and_yaml_syntax_errors_are_located(tmp_path: Path) -> None:
    errors = _errors(_minimal(api={"endpoint": "localhost"}))
    assert errors[0].startswith("service.api.endpoint:") and "HOST:PORT" in errors[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("service:\n  pipelines: [\n")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert "line 3" in ei.value.errors[0] and "YAML syntax error" in ei.value.errors[0]


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path, tmp_path: Path) -> None:
    if path.name.startswith("collector"):
        pytest.skip("OpenTelemetry Collector recipes, not tracepipe configs")
    # Configs with auth read their tokens from $TRACEPIPE_TOKENS_FILE (a mounted Secret in production).
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  - {sha256: " + "ab" * 32 + ", tenant: acme, scopes: [ingest, read]}\n")
    result = CliRunner().invoke(main, ["validate", "-c", str(path)], env={"TRACEPIPE_TOKENS_FILE": str(tokens)})
    assert result.exit_code == 0, result.output


def test_container_config_listens_everywhere_only_with_auth(tmp_path: Path) -> None:
    """The image's default (config/container.yaml) binds 0.0.0.0: without its tokens file it refuses to start."""
    result = CliRunner().invoke(main, ["validate", "-c", str(ROOT / "config" / "container.yaml")],
                                env={"TRACEPIPE_TOKENS_FILE": str(tmp_path / "missing.yaml")})
    assert result.exit_code == 2
    assert "auth.tokens_file" in result.output


def test_validate_command_names_paths_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("processors: {cost: {bogus: 1}}\nsinks: {prometheus: {}}\n"
                   "service: {pipelines: {t: {processors: [cost], sinks: [prometheus]}}}\n")
    result = CliRunner().invoke(main, ["validate", "-c", str(bad)])
    assert result.exit_code == 2
    assert "processors.cost.bogus: unknown option" in result.output

"""The top-level `auth:` section: bearer tokens by SHA-256 hex, never the tokens themselves.

    auth:
      tokens:
        - sha256: 6f1e...64 hex digits...   # `tracepipe token create` prints this line
          id: checkout-app                  # optional name, shown in logs instead of the token
          tenant: acme
          scopes: [ingest]
      tokens_file: /etc/tracepipe/tokens.yaml   # more tokens, same shape (a Kubernetes Secret)
      allow_unauthenticated: false          # true: every listener may bind non-loopback without auth
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.component import ComponentConfig

Scope = Literal["ingest", "read", "admin"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TokenEntry(ComponentConfig):
    sha256: str = Field(..., description="SHA-256 of the token, 64 hex digits.")
    id: str | None = Field(None, description="A name for the token, safe to log.")
    tenant: str = Field(..., min_length=1, max_length=128, description="The tenant that owns what this token sends.")
    scopes: list[Scope] = Field(..., min_length=1, description="ingest, read, admin.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if not _HEX64.match(v):
            raise ValueError("expected the token's SHA-256 as 64 hex digits (tracepipe token create prints it)")
        return v


class AuthConfig(ComponentConfig):
    tokens: list[TokenEntry] = Field(default_factory=list, description="Accepted tokens.")
    tokens_file: str | None = Field(
        None, description="YAML file with more `tokens:` entries (read at start); empty means none."
    )
    allow_unauthenticated: bool = Field(
        False, description="Allow every listener to bind a non-loopback address without auth."
    )


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry] = Field(default_factory=list)


def load_tokens(cfg: AuthConfig, errors: list[str], path: str = "auth") -> list[TokenEntry]:
    """Every token of `cfg`, the file's included; problems go to `errors` with their YAML path."""
    out = list(cfg.tokens)
    if cfg.tokens_file and cfg.tokens_file.strip():
        where = f"{path}.tokens_file"
        try:
            data: Any = yaml.safe_load(Path(cfg.tokens_file).read_text(encoding="utf-8"))
        except OSError as e:
            errors.append(f"{where}: cannot read {cfg.tokens_file}: {e.strerror or e}")
            return out
        except yaml.YAMLError as e:
            errors.append(f"{where}: {cfg.tokens_file} is not valid YAML: {getattr(e, 'problem', e)}")
            return out
        if isinstance(data, list):
            data = {"tokens": data}
        try:
            out.extend(_TokensFile.model_validate(data or {}).tokens)
        except ValidationError as e:
            from pipeline.config import validation_messages

            errors.extend(validation_messages(e, f"{where}({cfg.tokens_file})"))
    seen: dict[str, int] = {}
    for i, t in enumerate(out):
        if t.sha256 in seen:
            errors.append(f"{path}.tokens[{i}]: the same token hash is listed twice")
        seen[t.sha256] = i
    if not out:
        errors.append(f"{path}: no tokens (add `tokens:` entries or a tokens_file); "
                      "remove the section to run without auth")
    return out

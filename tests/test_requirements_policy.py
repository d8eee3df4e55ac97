"""A missing machine binary skips with a reason saying how to get it, and fails under CI."""

from __future__ import annotations

import pytest

from tests.services.requirements import MISSING_PREFIX, require_binary

ABSENT = "tracepipe-no-such-binary-xyz"


def test_present_binary_returns_its_path() -> None:
    assert require_binary("sh").endswith("/sh")


def test_missing_binary_skips_with_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        require_binary(ABSENT)
    reason = str(info.value)
    assert reason.startswith(MISSING_PREFIX) and "bash tests/run" in reason and "apt-get install" in reason


def test_missing_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        require_binary(ABSENT)
    assert str(info.value).startswith(MISSING_PREFIX)

"""The Faust internals the worker relies on (pipeline.worker.faust_compat) are still there.

A faust-streaming release that renames or reshapes one of them fails here, loudly, instead
of silently breaking the worker's delivery guarantees.
"""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from pipeline.worker import faust_compat

ROOT = Path(__file__).resolve().parents[1]


def test_installed_faust_has_every_internal_the_worker_uses() -> None:
    faust_compat.check_compatible()


def test_installed_faust_is_in_the_verified_range_pinned_in_pyproject() -> None:
    from packaging.specifiers import SpecifierSet

    pinned = re.search(r'"faust-streaming([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    assert SpecifierSet(pinned.group(1)) == SpecifierSet(faust_compat.VERIFIED)
    assert version("faust-streaming") in SpecifierSet(faust_compat.VERIFIED)


def test_current_event_is_what_faust_tables_read() -> None:
    import faust
    from faust.types import TP

    class Event:  # what faust.current_event() hands to a table: anything holding a message
        message = faust.types.Message(topic="t", partition=3, offset=7, timestamp=0.0, timestamp_type=0,
                                      headers=None, key=b"k", value=b"v", checksum=None, tp=TP("t", 3))

    ev = Event()
    assert faust.current_event() is None
    with faust_compat.current_event(ev):
        assert faust.current_event() is ev
    assert faust.current_event() is None


def test_released_messages_count_as_acked_for_a_rebalance() -> None:
    import faust
    from faust.types import TP

    msg = faust.types.Message(topic="t", partition=0, offset=1, timestamp=0.0, timestamp_type=0, headers=None,
                              key=b"k", value=b"v", checksum=None, tp=TP("t", 0))

    class Event:
        message = msg

    assert msg.acked is False
    faust_compat.release_uncommitted([Event()])
    assert msg.acked is True


def test_a_missing_internal_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.consumer import Consumer

    monkeypatch.delattr(Consumer, "_commit_offsets")
    with pytest.raises(faust_compat.FaustCompatError, match="_commit_offsets"):
        faust_compat.check_compatible()


def test_private_faust_access_lives_only_in_the_compat_module() -> None:
    out = subprocess.run(["grep", "-rnE", r"\._[a-z]", "pipeline/worker"], capture_output=True, text=True, cwd=ROOT)
    offenders = [
        line for line in out.stdout.splitlines()
        if not line.startswith("pipeline/worker/faust_compat.py")
        and not re.search(r"\bself\._[a-z]|os\._exit", line.split(":", 2)[2])
    ]
    assert offenders == []

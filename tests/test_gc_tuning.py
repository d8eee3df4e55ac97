"""pipeline/gc_tuning.py: the long-running commands freeze start-up objects and collect less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pipeline.gc_tuning import GEN0_THRESHOLD, tune_gc


@pytest.fixture()
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_freezes_live_objects_and_raises_the_gen0_threshold(
    restore_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACEPIPE_GC_TUNING", raising=False)
    gen1, gen2 = gc.get_threshold()[1:]
    assert tune_gc() is True
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_cyclic_garbage_is_still_collected_after_tuning(restore_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACEPIPE_GC_TUNING", raising=False)
    tune_gc()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2


def test_tracepipe_gc_tuning_0_keeps_python_defaults(restore_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEPIPE_GC_TUNING", "0")
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    assert tune_gc() is False
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen

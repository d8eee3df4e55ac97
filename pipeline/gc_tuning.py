"""Fewer, cheaper cyclic garbage collections in the long-running commands.

Every span becomes a handful of Python objects (a Span, its attribute dict, lists, Arrow
column inputs) that reference counting frees without the cyclic collector; but each
allocation counts towards the collector's generation-0 threshold (700 by default), so a
batch of 5,000 spans triggers hundreds of collections, and the older generations, which
hold everything imported and built at start (modules, pydantic models, price tables,
compiled rules), are scanned again and again. Measured in `python bench/throughput.py`
(`gc` line, same run): the default chain spends a noticeable share of its CPU there.

`tune_gc()` (called once by `tracepipe run`, `receiver` and `worker` after their runtime
started) moves every object alive at that point to the permanent generation
(`gc.freeze()`: never scanned again) and raises the generation-0 threshold to
`GEN0_THRESHOLD` allocations. Cyclic garbage is still collected, in fewer passes; memory
held by uncollected cycles between passes stays small (at most a few tens of thousands of
objects). Set `TRACEPIPE_GC_TUNING=0` to keep Python's defaults (for comparison).
"""

from __future__ import annotations

import gc
import os

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

GEN0_THRESHOLD = 50_000


def tune_gc() -> bool:
    """Freeze the objects built at start and raise the gen-0 threshold; False when disabled."""
    if os.environ.get("TRACEPIPE_GC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return True

"""Give memory back to the OS after very large requests (glibc only; a no-op elsewhere).

A 15 MiB OTLP request allocates several buffers of its size (the body, the decoded
message, strings, Arrow columns). glibc serves allocations above its mmap threshold with
mmap, returned on free; but the threshold is dynamic: freeing one such chunk raises it (up to
32 MiB), so the next large buffers come from the heap, fragment it and stay resident
(measured: +217 MB VmRSS after three 15 MiB requests, still there after 10 s idle).

`tune_allocator()` (called once at start by the CLI commands that serve OTLP) pins the mmap
threshold at 1 MiB (and the trim threshold with it), so large buffers always go to mmap and
come back on free. `tracepipe receiver` pins 8 MiB instead (RECEIVER_MMAP_THRESHOLD_BYTES,
the default `transport.kafka.max_request_bytes`): aiokafka copies each produce request (MBs)
several times while building it, and at 1 MiB every copy was a fresh mmap whose pages fault
in again: ~2 minor faults per span, measured at a fifth or more of the receiver's CPU under
bench/distributed.py's load (0.4 faults per span at 8 MiB). Requests past 8 MiB still go to
mmap, and the trim below still runs after large requests.

`note_request(size)`, called by the receivers, remembers large requests; a daemon thread
then runs `malloc_trim(0)` a few seconds later, once, to return freed heap pages (ctypes
releases the GIL for the call). Nothing here is needed for correctness.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

__all__ = ["LARGE_REQUEST_BYTES", "RECEIVER_MMAP_THRESHOLD_BYTES", "note_request", "trim_now", "tune_allocator"]

LARGE_REQUEST_BYTES = 4 * 1024 * 1024  # requests this large schedule a trim
MMAP_THRESHOLD_BYTES = 1024 * 1024
RECEIVER_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
TRIM_DELAY_SECONDS = 3.0  # after the last large request: the worker has usually stored it by then
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

log = logging.getLogger("tracepipe.memory")
_lock = threading.Lock()
_due: float | None = None  # monotonic time of the next trim
_thread: threading.Thread | None = None


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl, macOS)
    return libc


_LIBC = _libc()


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at `mmap_threshold` bytes and the trim threshold at twice
    that (see the module doc); False when not glibc."""
    if _LIBC is None:
        return False
    ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok = _LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold) == 1 and ok
    return ok


def trim_now() -> bool:
    """Return freed heap memory to the OS now; True if some was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def note_request(size: int) -> None:
    """A receiver took a request of `size` bytes: schedule a trim if it was large."""
    global _due, _thread
    if size < LARGE_REQUEST_BYTES or _LIBC is None:
        return
    with _lock:
        _due = time.monotonic() + TRIM_DELAY_SECONDS
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_trimmer, name="tracepipe-malloc-trim", daemon=True)
            _thread.start()


def _trimmer() -> None:
    global _due, _thread
    while True:
        with _lock:
            due = _due
            if due is None:
                _thread = None  # under the lock: note_request starts a new thread after this
                return
            wait = due - time.monotonic()
            if wait <= 0:
                _due = None
        if wait > 0:
            time.sleep(min(wait, TRIM_DELAY_SECONDS))
            continue
        try:
            trim_now()
        except Exception:  # never let a best-effort trim disturb the process
            log.debug("malloc_trim failed", exc_info=True)

"""Binaries the tests need from the machine, and what happens when one is missing.

`bash tests/run` (the README's test command) installs them when it runs as root on Debian. Where a
binary still cannot be had, the tests that need it skip with a one-line reason saying how to get it;
under CI (`CI=true`) the same situation fails the test instead, so a green CI run never hides a
missing install step.
"""

from __future__ import annotations

import os
import shutil

import pytest

# binary -> the Debian package that ships it
DEBIAN_PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "openssl": "openssl",
    "chromium": "chromium",  # tests/test_ui_browser.py, driven by the playwright package
}

MISSING_PREFIX = "missing dependency:"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing_reason(binary: str) -> str:
    package = DEBIAN_PACKAGES.get(binary, binary)
    return (f"{MISSING_PREFIX} {binary} is not on PATH; run `bash tests/run` as root, "
            f"or `apt-get install {package}`")


def require_binary(binary: str) -> str:
    """The path of `binary`; skips the calling test (fails it under CI) when it is not installed."""
    path = shutil.which(binary)
    if path is not None:
        return path
    reason = missing_reason(binary)
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_module(module: str, package: str | None = None) -> None:
    """Import check for a Python package of the test extra; skips (fails under CI) when missing."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return
    reason = (f"{MISSING_PREFIX} the Python package {package or module} is not installed; run `bash tests/run`, "
              f"or `pip install -e '.[test]'`")
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)

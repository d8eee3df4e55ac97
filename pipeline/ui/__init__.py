"""The web UI's static files (pipeline/ui/static): one HTML page and plain ES modules, no build step.

Served under /ui by pipeline/api/ui.py. The files hold no data: the page reads everything through
the JSON API with the bearer token the user pastes (kept in the tab's sessionStorage).
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

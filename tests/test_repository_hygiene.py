"""The tree itself: no file that ships or documents tracepipe carries an unresolved merge."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)


def test_no_tracked_file_holds_merge_conflict_markers() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    files = [ROOT / f for f in listed.stdout.splitlines()] if listed.returncode == 0 else list(ROOT.rglob("*.*"))
    assert files, "no files listed"
    bad = []
    for path in files:
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".tpl", ".html", ".js", ".css"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if MARKER.search(text):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"unresolved merge conflict markers in: {', '.join(bad)}"

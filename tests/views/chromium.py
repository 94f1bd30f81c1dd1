"""Headless Chromium for the report's browser tests: a screenshot, and a page's verdict on
itself (a copy of the page with a checking script added, loaded from the same folder)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
        f"--user-data-dir={profile}", *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=45, env=env,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def page_check(tmp_path: Path, html_path: Path, script: str) -> Any:
    """What ``script`` (a ``<script>`` that puts JSON in ``body[data-check]`` on load) finds
    in the rendered page. The report itself has no script, so a copy is checked."""
    probe = html_path.with_name(".report-probe.html")
    page = html_path.read_text(encoding="utf-8")
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    try:
        dom = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000",
                           probe.as_uri()).stdout
    finally:
        probe.unlink()
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))

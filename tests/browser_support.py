"""Shared set-up for tests that drive Debian's Chromium through Playwright (never its downloads)."""

from __future__ import annotations

import re
from pathlib import Path

from .harness import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
DIST_INDEX = ROOT / "web_client" / "dist" / "index.html"
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium keeps calling home, which this closed network refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

# What Chromium itself logs (as a console error) for every non-2xx fetch; only tolerated for
# statuses a test provokes on purpose.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")

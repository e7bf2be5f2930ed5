"""The HTML report in a real browser: headless Chromium renders it, chart included.

CI installs the browser with: apt-get update && apt-get install -y chromium
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from compliance_support import write_processing_record

from compliance.export import export_report
from compliance.period import parse_period

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHART_BLUE = (0x00, 0x72, 0xB2)  # first series colour in compliance.report.chart, unused by the CSS


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                    "(apt-get update && apt-get install -y chromium)")
def test_html_report_renders_with_its_chart_in_chromium(node: Path, tmp_path: Path) -> None:
    write_processing_record(node)
    html = tmp_path / "report.html"
    export_report(node, parse_period("2025-03-01", "2025-03-31"), "html", html,
                  actor="officer:carol")
    shot = tmp_path / "shot.png"
    completed = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,6000", html.resolve().as_uri()],
        capture_output=True, timeout=120, check=False,
    )
    assert shot.is_file(), completed.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert len(data) > 100_000, "screenshot suspiciously small"
    import numpy as np
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(shot) as image:
        assert image.size == (1200, 6000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 24) or []
        pixels = np.asarray(rgb, dtype=np.int16)
    assert len(colours) > 50, "the page rendered (nearly) single-coloured"
    near_blue = (np.abs(pixels - np.array(CHART_BLUE)) <= 12).all(axis=2)
    assert near_blue.sum() > 300, "the privacy chart's series is not visible in the screenshot"

"""The rollout report (scaler.report): a PNG, and an HTML page that headless Chromium renders."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need

from scaler.report import Batch, Timeline, batches_from_progress, per_minute, write_report

PROGRESS = """\
[    0.4s] planning: 3 droplets, strategy rolling, batches of 1
[    2.0s] batch 1/3: planning digitalocean_droplet.wp_node[0]
[    2.6s] batch 1/3: applying
[    9.1s] batch 1/3: waiting for 1 droplets to pass http:80/ 3 times, every 10s
[   40.2s] batch 1/3: healthy (38.2s)
[   40.5s] batch 2/3: planning digitalocean_droplet.wp_node[1]
[   79.0s] batch 2/3: healthy (38.5s)
[   79.3s] batch 3/3: planning digitalocean_droplet.wp_node[2]
[  118.0s] batch 3/3: healthy (38.7s)
done: 3 droplets now run image 7, all healthy
"""


def _timeline() -> Timeline:
    batches = batches_from_progress(PROGRESS.splitlines(), offset=1.0)
    capacity = [(0.0, 3), (10.0, 2), (42.0, 3), (50.0, 2), (81.0, 3), (90.0, 2), (120.0, 3)]
    traffic = [(i / 10, 60.0 <= i / 10 < 61.0) for i in range(1200)]
    return Timeline(
        title="rolling, 3 droplets",
        started=1_800_000_000.0,
        capacity=tuple(capacity),
        batches=batches,
        api_requests=tuple(i * 0.7 for i in range(170)),
        traffic=tuple(traffic),
        fleet=3,
        floor=2,
        figures=(("requests", "1200"), ("failed", "10"), ("p99", "12.0 ms")),
    )


def test_batches_come_from_the_rollouts_progress_lines() -> None:
    assert batches_from_progress(PROGRESS.splitlines(), offset=1.0) == (
        Batch("batch 1/3", 3.0, 41.2),
        Batch("batch 2/3", 41.5, 80.0),
        Batch("batch 3/3", 80.3, 119.0),
    )


def test_api_requests_per_minute_count_the_minute_before() -> None:
    assert per_minute([1.0, 2.0, 30.0, 61.5, 62.5], [0.5, 30.0, 61.0, 62.0, 200.0]) == [
        0,
        3,
        2,
        2,
        0,
    ]


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chromium = shutil.which("chromium")
    need(chromium is not None, "headless Chromium is absent (Debian package chromium)")
    assert chromium is not None
    png, page = write_report(_timeline(), tmp_path / "report", name="rolling")
    assert (png.name, page.name) == ("rolling.png", "rolling.html")
    raw = png.read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    text = page.read_text()
    # self-contained: the same PNG inline, nothing fetched
    assert base64.b64encode(raw).decode() in text
    assert "http://" not in text and "https://" not in text
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    base.append(f"--user-data-dir={tmp_path / 'profile'}")
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<th>failed</th><td>10</td>" in dom.stdout
    assert "<td>batch 2/3</td><td>41.5</td><td>80.0</td><td>38.5</td>" in dom.stdout
    assert re.search(r'<img id="timeline"[^>]*src="data:image/png;base64,', dom.stdout)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1100,900", "--hide-scrollbars",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from matplotlib import image

    pixels = image.imread(shot)
    # the drawn timeline is in the shot: thousands of coloured (not grey) pixels, not a blank page
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    coloured = ((abs(red - green) > 0.2) | (abs(green - blue) > 0.2)).sum()
    assert coloured > 2000
    drawn = image.imread(png)
    assert drawn.shape[0] > 500 and drawn.shape[1] > 800


def test_counted_api_use_adds_up_per_minute() -> None:
    # ApiBudget's readings: 40 requests by 10 s, 25 more by 50 s, 5 by 100 s
    counted = [(10.0, 40), (50.0, 25), (100.0, 5)]
    assert per_minute([55.0], [9.0, 10.0, 50.0, 69.0, 70.0, 109.0, 111.0], counted) == [
        0,
        40,
        65,
        66,
        26,
        31,
        6,
    ]

"""A rollout's timeline as a PNG and a self-contained HTML page (the only module using matplotlib).

A `Timeline` holds, in seconds from the rollout's start: the healthy droplets behind the balancer
as sampled, the batches (start, end), the API requests the token made, and the requests a load
generator sent with whether each failed. `write_report(timeline, folder)` draws it (matplotlib,
the optional extra `report`) and writes `<name>.png` and `<name>.html` (the PNG embedded as
base64, with a table of the figures), so the page can be mailed or attached to CI on its own.

What a rollout emits today is enough to build one without changing it: `scaler rollout`'s
progress lines on stderr (`[   12.3s] batch 1/2: applying`, `batch 1/2: healthy (31.0s)`) give
the batch boundaries (`batches_from_progress`); the capacity, the API log and the traffic are
observed beside it (bench/traffic.py does). A rollout filling a Timeline itself (for
`scaler rollout --report DIR`) provides exactly the same fields: `started` (epoch), per batch its
label, start and end (seconds from `started`), each capacity observation (seconds, healthy
count), the floor and the fleet size, and its API use: each request's time where a log has
them, else each ApiBudget reading (time, requests since the one before).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic
from scaler.rollout import RolloutResult

API_LIMIT_PER_MINUTE = 250


class ReportError(ScalerError):
    """A report cannot be drawn here."""


@dataclass(frozen=True)
class Batch:
    """One batch of a rollout: its label and when it ran (seconds from the rollout's start)."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    """Everything a rollout report draws; every time is in seconds from `started` (epoch)."""

    title: str
    started: float
    # (seconds, droplets behind the balancer that it calls healthy)
    capacity: tuple[tuple[float, int], ...] = ()
    batches: tuple[Batch, ...] = ()
    # seconds of each API request the rollout's token made (a log, as the local cloud keeps)
    api_requests: tuple[float, ...] = ()
    # or, where only counts are known (DigitalOcean reports what is left of the hour, which
    # ApiBudget reads before and after each batch): (seconds, requests since the last reading)
    api_used: tuple[tuple[float, int], ...] = ()
    api_limit: int = API_LIMIT_PER_MINUTE
    # (seconds, failed) of each request sent through the balancer
    traffic: tuple[tuple[float, bool], ...] = ()
    fleet: int | None = None
    floor: int | None = None
    # rows of the figures table: (what, value)
    figures: tuple[tuple[str, str], ...] = field(default=())

    @property
    def end(self) -> float:
        """The last moment anything was seen (at least 1 s)."""
        times = [t for t, _ in self.capacity] + [b.end for b in self.batches]
        times += list(self.api_requests) + [t for t, _ in self.api_used]
        times += [t for t, _ in self.traffic]
        return max([1.0, *times])


_PROGRESS = re.compile(r"^\[\s*(?P<t>[0-9.]+)s\]\s+(?P<label>batch \d+/\d+):\s*(?P<what>.*)$")


def batches_from_progress(lines: Iterable[str], offset: float = 0.0) -> tuple[Batch, ...]:
    """The batches in `scaler rollout`'s progress lines: from a batch's first line to its
    `healthy` (or last) line; `offset` is the CLI's start in the timeline's seconds."""
    seen: dict[str, list[float]] = {}
    for line in lines:
        found = _PROGRESS.match(line.strip())
        if found is None:
            continue
        moment = offset + float(found["t"])
        seen.setdefault(found["label"], []).append(moment)
    return tuple(Batch(label, min(ts), max(ts)) for label, ts in seen.items())


def per_minute(
    times: Sequence[float], at: Sequence[float], counted: Sequence[tuple[float, int]] = ()
) -> list[int]:
    """For each moment in `at`, the requests of the minute before it: one per entry of
    `times`, n per (time, n) of `counted`."""
    ordered = sorted([(t, 1) for t in times] + list(counted))
    out, lo, hi, inside = [], 0, 0, 0
    for moment in at:
        while hi < len(ordered) and ordered[hi][0] <= moment:
            inside += ordered[hi][1]
            hi += 1
        while lo < hi and ordered[lo][0] <= moment - 60.0:
            inside -= ordered[lo][1]
            lo += 1
        out.append(inside)
    return out


def _per_second(traffic: Sequence[tuple[float, bool]], end: float) -> tuple[list[int], list[int]]:
    seconds = int(end) + 1
    sent, failed = [0] * seconds, [0] * seconds
    for moment, bad in traffic:
        index = min(seconds - 1, max(0, int(moment)))
        sent[index] += 1
        failed[index] += bad
    return sent, failed


def render_png(timeline: Timeline) -> bytes:
    """The timeline drawn as a PNG: capacity, API requests per minute, failed requests."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        from matplotlib import pyplot
    except ImportError as err:
        raise ReportError(
            "a report needs matplotlib; install scaler with the `report` extra "
            "(pip install 'scaler[report]')"
        ) from err
    end = timeline.end
    figure, (cap, api, traffic) = pyplot.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, height_ratios=(2, 1, 1.2)
    )
    try:
        _draw(timeline, end, cap, api, traffic)
        figure.suptitle(timeline.title)
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png", dpi=100)
        return out.getvalue()
    finally:
        pyplot.close(figure)


def _draw(timeline: Timeline, end: float, cap: Any, api: Any, traffic: Any) -> None:
    for number, batch in enumerate(timeline.batches):
        for axes in (cap, api, traffic):
            axes.axvspan(batch.start, batch.end, color=f"C{number % 2}", alpha=0.08, lw=0)
            axes.axvline(batch.start, color="grey", lw=0.6, ls=":")
        cap.annotate(batch.label, (batch.start, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(2, -10), textcoords="offset points", fontsize=7)  # fmt: skip
    if timeline.capacity:
        xs, ys = zip(*sorted(timeline.capacity), strict=True)
        cap.step(xs, ys, where="post", color="C2", label="healthy behind the balancer")
    if timeline.fleet is not None:
        cap.axhline(timeline.fleet, color="C0", ls="--", lw=0.8, label=f"fleet {timeline.fleet}")
    if timeline.floor is not None:
        cap.axhline(timeline.floor, color="C3", ls="--", lw=0.8, label=f"floor {timeline.floor}")
    cap.set_ylabel("healthy droplets")
    cap.set_ylim(bottom=0)
    cap.legend(loc="lower left", fontsize=8)
    moments = [i * end / 400 for i in range(401)]
    api.plot(
        moments,
        per_minute(timeline.api_requests, moments, timeline.api_used),
        color="C1",
        label="API/min",
    )
    api.axhline(
        timeline.api_limit, color="C3", ls="--", lw=0.8, label=f"limit {timeline.api_limit}"
    )
    api.set_ylabel("API requests\nlast minute")
    api.set_ylim(bottom=0)
    api.legend(loc="upper left", fontsize=8)
    sent, failed = _per_second(timeline.traffic, end)
    seconds = list(range(len(sent)))
    traffic.plot(seconds, sent, color="C0", lw=0.8, label="requests/s")
    traffic.bar(seconds, failed, width=1.0, color="C3", label="failed/s")
    traffic.set_ylabel("requests")
    traffic.set_xlabel("seconds from the rollout's start")
    traffic.set_ylim(bottom=0)
    traffic.legend(loc="upper left", fontsize=8)
    traffic.set_xlim(0, end)


def render_html(timeline: Timeline, png: bytes) -> str:
    """A self-contained page: the PNG inline (base64), the figures, the batches."""
    title = html.escape(timeline.title)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in timeline.figures
    )
    batches = "".join(
        f"<tr><td>{html.escape(b.label)}</td><td>{b.start:.1f}</td><td>{b.end:.1f}</td>"
        f"<td>{b.end - b.start:.1f}</td></tr>"
        for b in timeline.batches
    )
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{title}</h1>
<img id="timeline" alt="timeline of {title}" src="data:image/png;base64,{image}">
<h2>Figures</h2>
<table id="figures">{rows}</table>
<h2>Batches</h2>
<table id="batches"><tr><th>batch</th><th>start (s)</th><th>end (s)</th><th>seconds</th></tr>
{batches}</table>
</body></html>
"""


def write_report(timeline: Timeline, folder: Path, name: str = "rollout") -> tuple[Path, Path]:
    """Write `<name>.png` and `<name>.html` into `folder` (created); their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = render_png(timeline)
    png_path, html_path = folder / f"{name}.png", folder / f"{name}.html"
    write_atomic(png_path, png)
    write_atomic(html_path, render_html(timeline, png))
    return png_path, html_path


def timeline_of(result: RolloutResult, started: float) -> Timeline:
    """The timeline of a rollout from its result (`started`: when it began, epoch seconds)."""
    batches = tuple(
        Batch(f"batch {number}", b.start, b.end) for number, b in enumerate(result.batches, 1)
    )
    figures = (
        ("status", result.status),
        ("image", f"{result.previous_image} -> {result.target_image}"),
        ("strategy", result.strategy),
        ("droplets replaced", str(len(result.replaced))),
        ("fewest healthy behind the balancer", f"{result.min_healthy} (floor {result.floor})"),
        (
            "API requests",
            "not watched" if result.api_requests is None else str(result.api_requests),
        ),
        ("elapsed", f"{result.elapsed:.1f} s"),
    )
    return Timeline(
        title=f"{result.kind} of image {result.target_image} ({result.strategy})",
        started=started,
        capacity=result.capacity,
        batches=batches,
        api_used=result.api_used,
        fleet=len(result.before) or None,
        floor=result.floor,
        figures=figures,
    )

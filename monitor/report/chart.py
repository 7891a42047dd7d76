"""The report's chart: daily spend stacked by tier for both weeks, with the batch share.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display).
matplotlib and numpy add about 45 MB to a process, which Python never gives back; the daemon
draws one chart a week and must stay small for months, so ``batch-monitor run`` calls
``draw_in_child()`` and each chart is drawn by a short-lived child process: the parent sends
the chart's plain data (``chart_spec``) as JSON and reads the PNG back. One-shot commands draw
in their own process (they exit anyway). Both give the same bytes.
"""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from monitor.report.weekly import WeeklyReport

# Pixel size of the PNG (width x height) and its resolution; the HTML states the same size.
WIDTH, HEIGHT, DPI = 1000, 500, 100
REALTIME_COLOR = "#e76f51"
BATCH_COLOR = "#2a9d8f"
SHARE_COLOR = "#264653"
BAND_COLOR = "#8ab17d"
# The child draws in about a second; far longer means it is stuck.
TIMEOUT_SECONDS = 300


class ChartError(RuntimeError):
    """The chart could not be drawn (the child process failed or timed out)."""


_IN_CHILD = False


def draw_in_child(enabled: bool = True) -> None:
    """Draw every chart of this process in a child process from now on (the daemon's choice)."""
    global _IN_CHILD
    _IN_CHILD = enabled


def chart_png(report: WeeklyReport) -> bytes:
    """Return the chart of ``report`` as PNG bytes."""
    spec = chart_spec(report)
    if not _IN_CHILD:
        return draw(spec)
    try:
        done = subprocess.run(
            # Run as a script, not `-m`: the child imports matplotlib and this file only.
            [sys.executable, __file__],
            input=orjson.dumps(spec),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChartError(f"the chart took longer than {TIMEOUT_SECONDS} s to draw") from None
    if done.returncode != 0 or not done.stdout.startswith(b"\x89PNG"):
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ChartError(f"the chart could not be drawn: {last}")
    return done.stdout


def chart_spec(report: WeeklyReport) -> dict[str, Any]:
    """Return what the chart shows, as plain JSON-ready data."""
    from monitor.report.weekly import TARGET_BAND

    return {
        "days": [
            {
                "day": d.day.isoformat(),
                "realtime": float(d.realtime_usd),
                "batch": float(d.batch_usd),
                "share_requests": d.share_requests,
                "share_spend": d.share_spend,
            }
            for d in report.days
        ],
        "band": list(TARGET_BAND),
        "title": (
            f"Claude spend by day, weeks of {report.week.previous.start_date.isoformat()} and "
            f"{report.week.start_date.isoformat()} ({report.week.tz})"
        ),
    }


def main() -> None:
    """Draw the chart whose spec is on stdin; write the PNG to stdout (the child's side)."""
    sys.stdout.buffer.write(draw(orjson.loads(sys.stdin.buffer.read())))
    sys.stdout.buffer.flush()


def draw(spec: dict[str, Any]) -> bytes:
    """Return the PNG of a ``chart_spec``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FuncFormatter, PercentFormatter
    from matplotlib.transforms import blended_transform_factory

    days = spec["days"]
    band_low, band_high = spec["band"]
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(days)))
    realtime = [float(d["realtime"]) for d in days]
    batch = [float(d["batch"]) for d in days]
    # Last week's bars are paler, so the two weeks read apart at a glance.
    alphas = [0.45 if i < 7 else 1.0 for i in xs]
    for i in xs:
        ax.bar(i, realtime[i], color=REALTIME_COLOR, alpha=alphas[i], width=0.75)
        ax.bar(i, batch[i], bottom=realtime[i], color=BATCH_COLOR, alpha=alphas[i], width=0.75)
    ax.set_xticks(xs)
    labels = [date.fromisoformat(d["day"]).strftime("%a\n%d %b") for d in days]
    ax.set_xticklabels(labels, fontsize=8)
    ax.axvline(6.5, color="#999999", linewidth=1, linestyle="--")
    ax.set_ylabel("spend per day (USD)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:,.0f}"))
    ax.spines[["top"]].set_visible(False)
    top = max((r + b for r, b in zip(realtime, batch, strict=True)), default=0.0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.text(3, ax.get_ylim()[1] * 0.97, "last week", ha="center", va="top", fontsize=9)
    ax.text(10, ax.get_ylim()[1] * 0.97, "this week", ha="center", va="top", fontsize=9)

    share = ax.twinx()
    share.set_ylim(0, 1)
    # The band belongs to the share axis but is drawn on the bars' axis, behind the bars (the
    # share axis is drawn on top of the bars' axis, so its own patches would tint them).
    band = Rectangle(
        (0, band_low),
        1,
        band_high - band_low,
        transform=blended_transform_factory(ax.transAxes, share.transData),
        color=BAND_COLOR,
        alpha=0.25,
        zorder=0,
        linewidth=0,
    )
    ax.add_patch(band)
    use_requests = any(d["share_requests"] is not None for d in days)
    values = [d["share_requests"] if use_requests else d["share_spend"] for d in days]
    points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
    if points:
        share.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color=SHARE_COLOR,
            marker="o",
            linewidth=2,
        )
    share.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    basis = "requests" if use_requests else "spend"
    share.set_ylabel(f"batch share of {basis}")
    share.spines[["top"]].set_visible(False)

    fig.legend(
        handles=[
            Patch(color=REALTIME_COLOR, label="real-time"),
            Patch(color=BATCH_COLOR, label="batch"),
            Line2D([0], [0], color=SHARE_COLOR, marker="o", label=f"batch share of {basis}"),
            Patch(color=BAND_COLOR, alpha=0.3, label="target band"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.93),
        ncol=4,
        frameon=False,
        fontsize=9,
    )
    fig.suptitle(spec["title"], y=0.985, fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.91, top=0.84, bottom=0.13)
    out = io.BytesIO()
    # No timestamp in the PNG, so the same report gives the same bytes.
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


if __name__ == "__main__":
    main()

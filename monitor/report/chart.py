"""The report's chart: daily spend stacked by tier for both weeks, with the batch share.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display),
so it is safe in the daemon's threads and needs no GUI toolkit.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.report.weekly import WeeklyReport

# Pixel size of the PNG (width x height) and its resolution; the HTML states the same size.
WIDTH, HEIGHT, DPI = 1000, 500, 100
REALTIME_COLOR = "#e76f51"
BATCH_COLOR = "#2a9d8f"
SHARE_COLOR = "#264653"
BAND_COLOR = "#8ab17d"


def chart_png(report: WeeklyReport) -> bytes:
    """Return the chart of ``report`` as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FuncFormatter, PercentFormatter
    from matplotlib.transforms import blended_transform_factory

    from monitor.report.weekly import TARGET_BAND

    days = report.days
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(days)))
    realtime = [float(d.realtime_usd) for d in days]
    batch = [float(d.batch_usd) for d in days]
    # Last week's bars are paler, so the two weeks read apart at a glance.
    alphas = [0.45 if i < 7 else 1.0 for i in xs]
    for i in xs:
        ax.bar(i, realtime[i], color=REALTIME_COLOR, alpha=alphas[i], width=0.75)
        ax.bar(i, batch[i], bottom=realtime[i], color=BATCH_COLOR, alpha=alphas[i], width=0.75)
    ax.set_xticks(xs)
    ax.set_xticklabels([d.day.strftime("%a\n%d %b") for d in days], fontsize=8)
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
        (0, TARGET_BAND[0]),
        1,
        TARGET_BAND[1] - TARGET_BAND[0],
        transform=blended_transform_factory(ax.transAxes, share.transData),
        color=BAND_COLOR,
        alpha=0.25,
        zorder=0,
        linewidth=0,
    )
    ax.add_patch(band)
    use_requests = any(d.share_requests is not None for d in days)
    values = [d.share_requests if use_requests else d.share_spend for d in days]
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
    fig.suptitle(
        f"Claude spend by day, weeks of {report.week.previous.start_date.isoformat()} and "
        f"{report.week.start_date.isoformat()} ({report.week.tz})",
        y=0.985,
        fontsize=12,
    )
    fig.subplots_adjust(left=0.09, right=0.91, top=0.84, bottom=0.13)
    out = io.BytesIO()
    # No timestamp in the PNG, so the same report gives the same bytes.
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()

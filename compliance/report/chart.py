"""The privacy-spent-over-time chart, as SVG (HTML report) or PNG (PDF report).

Why matplotlib's object API (Figure + canvas) rather than pyplot: pyplot keeps global state
and picks a GUI backend; a report generator on a headless node must do neither.
"""

from __future__ import annotations

import io
from typing import Literal, Sequence

from compliance.report.data import DatasetPrivacy

# Okabe–Ito palette: readable by colour-blind readers, and distinct from the report CSS.
_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def privacy_chart(privacy: Sequence[DatasetPrivacy], fmt: Literal["svg", "png"]) -> bytes:
    """Cumulative ε per dataset (steps) against its budget (dashed), over time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.6), dpi=110)
    axes = figure.add_subplot()
    for position, row in enumerate(privacy):
        colour = _COLOURS[position % len(_COLOURS)]
        times = [date2num(t) for t, _ in row.series]
        spent = [value for _, value in row.series]
        axes.step(times, spent, where="post", marker="o", color=colour, label=f"{row.dataset} ε spent")
        axes.axhline(row.epsilon_budget, color=colour, linestyle="--", linewidth=1,
                     label=f"{row.dataset} ε budget ({row.epsilon_budget:g})")
    if not privacy:
        axes.text(0.5, 0.5, "no dp.charge events up to the end of the period",
                  ha="center", va="center", transform=axes.transAxes)
    else:
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes.legend(loc="upper left", fontsize=8)
    axes.set_ylabel("cumulative ε")
    axes.set_ylim(bottom=0)
    axes.set_title("Privacy budget spent over time (UTC)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    canvas = FigureCanvasSVG(figure) if fmt == "svg" else FigureCanvasAgg(figure)
    canvas.print_figure(buffer, format=fmt, metadata=_METADATA[fmt])
    return buffer.getvalue()


# Fixed metadata keeps output reproducible (no creation dates or tool versions).
_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}}

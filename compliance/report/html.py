"""HTML report: one self-contained file (inline CSS and inline SVG chart, no scripts, no
external resources) that opens in any browser and can be archived as is."""

from __future__ import annotations

from html import escape

from compliance.report.chart import privacy_chart
from compliance.report.data import ReportData
from compliance.report.layout import (
    Block,
    Chart,
    HashList,
    KeyValues,
    Paragraph,
    Table,
    build_sections,
    title_block,
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1b1b1b;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #1f5f8b;
padding-bottom:.2rem;margin-top:2rem;color:#1f5f8b}h3{font-size:1rem;margin:1rem 0 .3rem}
.sub{color:#555}table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ccd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef3f8}td.k{width:30%;font-weight:600;background:#f7f9fb}
.mono,code{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;font-size:.85rem}
.ok{color:#1e7b34;font-weight:700}.bad{color:#b3261e;font-weight:700}
figure{margin:0}figcaption{color:#555;font-size:.85rem}.empty{color:#777;font-style:italic}
table.tall td{height:3.5rem}
"""


def render_html(data: ReportData) -> bytes:
    """The whole report as UTF-8 HTML."""
    title, subtitle = title_block(data)
    chart_svg = privacy_chart(data.privacy, "svg").decode("utf-8")
    chart_svg = chart_svg[chart_svg.index("<svg"):]  # drop the XML prolog and doctype
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>",
        "<nav><ol>",
    ]
    sections = build_sections(data)
    for number, section in enumerate(sections, 1):
        parts.append(f"<li><a href='#s{number}'>{escape(section.title)}</a></li>")
    parts.append("</ol></nav>")
    for number, section in enumerate(sections, 1):
        parts.append(f"<section id='s{number}'><h2>{number}. {escape(section.title)}</h2>")
        parts.extend(_block(block, chart_svg, data.integrity.verified) for block in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode("utf-8")


def _block(block: Block, chart_svg: str, verified: bool) -> str:
    if isinstance(block, Paragraph):
        css = (" class='ok'" if verified else " class='bad'") if block.emphasis else ""
        return f"<p{css}>{escape(block.text)}</p>"
    if isinstance(block, KeyValues):
        rows = "".join(
            f"<tr><td class='k'>{escape(k)}</td><td class='mono'>{escape(v)}</td></tr>"
            for k, v in block.rows
        )
        return f"<table>{rows}</table>"
    if isinstance(block, Table):
        if not block.rows:
            return f"<h3>{escape(block.caption)}</h3><p class='empty'>{escape(block.empty)}</p>"
        head = "".join(f"<th>{escape(h)}</th>" for h in block.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
            for row in block.rows
        )
        css = " class='tall'" if block.tall else ""  # room to sign by hand
        return (f"<h3>{escape(block.caption)}</h3><table{css}><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
    if isinstance(block, HashList):
        items = "".join(f"<li><code>{escape(h)}</code></li>" for h in block.hashes)
        return f"<h3>{escape(block.label)}</h3><ol>{items}</ol>"
    if isinstance(block, Chart):
        return (f"<figure id='privacy-chart'>{chart_svg}"
                f"<figcaption>{escape(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown report block {block!r}")

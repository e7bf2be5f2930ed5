"""PDF report with reportlab: the same sections as the HTML report, the chart as PNG.

Why embed DejaVu fonts (shipped with matplotlib): the standard PDF fonts cannot show ε, δ or
≤, and a report whose privacy figures print as boxes — or whose text cannot be extracted for
archiving and search — is not one to hand a regulator.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

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

_FONTS = {"HF-Sans": "DejaVuSans.ttf", "HF-Sans-Bold": "DejaVuSans-Bold.ttf",
          "HF-Mono": "DejaVuSansMono.ttf"}


def _register_fonts() -> None:
    """Register the embedded fonts once per process (reportlab keeps a global registry)."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "HF-Sans" in pdfmetrics.getRegisteredFontNames():
        return
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name, file_name in _FONTS.items():
        pdfmetrics.registerFont(TTFont(name, str(font_dir / file_name)))
    pdfmetrics.registerFontFamily("HF-Sans", normal="HF-Sans", bold="HF-Sans-Bold",
                                  italic="HF-Sans", boldItalic="HF-Sans-Bold")


def render_pdf(data: ReportData) -> bytes:
    """The whole report as a PDF document."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, KeepTogether, PageBreak, SimpleDocTemplate, Spacer
    from reportlab.platypus import Paragraph as RLParagraph
    from reportlab.platypus import Table as RLTable
    from reportlab.platypus import TableStyle

    _register_fonts()
    styles = {
        "title": ParagraphStyle("title", fontName="HF-Sans-Bold", fontSize=17, leading=21,
                                spaceAfter=4),
        "sub": ParagraphStyle("sub", fontName="HF-Sans", fontSize=9, textColor=colors.grey,
                              spaceAfter=10),
        "h2": ParagraphStyle("h2", fontName="HF-Sans-Bold", fontSize=13, leading=16,
                             textColor=colors.HexColor("#1f5f8b"), spaceBefore=12, spaceAfter=6),
        "h3": ParagraphStyle("h3", fontName="HF-Sans-Bold", fontSize=10, leading=13,
                             spaceBefore=6, spaceAfter=3),
        "body": ParagraphStyle("body", fontName="HF-Sans", fontSize=9, leading=12, spaceAfter=5),
        "cell": ParagraphStyle("cell", fontName="HF-Sans", fontSize=7.5, leading=9.5),
        "cell-long": ParagraphStyle("cell-long", fontName="HF-Sans", fontSize=7.5, leading=9.5,
                                    wordWrap="CJK"),
        "head": ParagraphStyle("head", fontName="HF-Sans-Bold", fontSize=7.5, leading=9.5),
        "mono": ParagraphStyle("mono", fontName="HF-Mono", fontSize=7, leading=9,
                               wordWrap="CJK"),
    }
    ok_colour = colors.HexColor("#1e7b34" if data.integrity.verified else "#b3261e")
    styles["emphasis"] = ParagraphStyle("emphasis", parent=styles["body"],
                                        fontName="HF-Sans-Bold", textColor=ok_colour)
    width = A4[0] - 30 * mm
    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#ccccdd")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef3f8")),
    ])
    kv_style = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#ccccdd")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f7f9fb")),
    ])

    # Tables split inside a row (splitInRow): a cell's text comes partly from the coordinator (a
    # plan's purpose, up to 2,000 characters) and a summary cell lists every plan, so a row can be
    # taller than a page, which reportlab otherwise refuses to lay out (LayoutError: no PDF at all).
    def text(value: str, style: str = "cell") -> Any:
        if style == "cell" and any(len(word) > 18 for word in value.split()):
            style = "cell-long"  # hashes and paths break anywhere; words wrap at spaces
        return RLParagraph(_xml(value), styles[style])

    def block(item: Block) -> list[Any]:
        if isinstance(item, Paragraph):
            return [text(item.text, "emphasis" if item.emphasis else "body")]
        if isinstance(item, KeyValues):
            rows = [[text(k, "head"), text(v, "mono" if _is_hex(v) else "cell")]
                    for k, v in item.rows]
            table = RLTable(rows, colWidths=[0.32 * width, 0.68 * width], splitInRow=1)
            table.setStyle(kv_style)
            return [table, Spacer(1, 6)]
        if isinstance(item, Table):
            if not item.rows:
                return [KeepTogether([text(item.caption, "h3"), text(item.empty, "body")])]
            rows = [[text(h, "head") for h in item.headers]]
            rows += [[text(cell) for cell in row] for row in item.rows]
            weights = item.widths or (1.0,) * len(item.headers)
            table = RLTable(rows, colWidths=[width * w / sum(weights) for w in weights],
                            rowHeights=[None] + [16 * mm] * len(item.rows) if item.tall else None,
                            repeatRows=1, splitInRow=1)
            table.setStyle(grid)
            # a caption never sits alone at the foot of a page
            return [KeepTogether([text(item.caption, "h3"), table]), Spacer(1, 6)]
        if isinstance(item, HashList):
            lines = [text(item.label, "h3")]
            lines += [text(f"{n}. {h}", "mono") for n, h in enumerate(item.hashes, 1)]
            return [KeepTogether(lines)]
        if isinstance(item, Chart):
            png = privacy_chart(data.privacy, "png")
            image = Image(io.BytesIO(png), width=width, height=width * 3.6 / 8)
            return [image, text(item.caption, "body")]
        raise TypeError(f"unknown report block {item!r}")

    title, subtitle = title_block(data)
    story: list[Any] = [text(title, "title"), text(subtitle, "sub")]
    for number, section in enumerate(build_sections(data), 1):
        if section.title.startswith(("Annex", "Appendix")):
            story.append(PageBreak())  # the annex is signed on its own pages; the appendix is evidence
        story.append(text(f"{number}. {section.title}", "h2"))
        for item in section.blocks:
            story.extend(block(item))

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("HF-Sans", 7.5)
        canvas.setFillColor(colors.grey)
        canvas.drawString(15 * mm, 10 * mm, f"{title} · {data.period.label_from} to "
                                            f"{data.period.label_to}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
        bottomMargin=18 * mm, title=title, author=data.origin,
        subject="HealthFed audit report", creator="HealthFed compliance",
        invariant=1,
    )
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _xml(value: str) -> str:
    """Escape text for reportlab's mini-markup."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _is_hex(value: str) -> bool:
    return len(value) >= 32 and all(c in "0123456789abcdef" for c in value)

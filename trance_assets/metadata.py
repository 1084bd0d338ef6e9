"""Helpers that turn core results into Dagster metadata (markdown tables, images)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import dagster as dg


def md_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, max_rows: int = 50) -> dg.MetadataValue:
    """A markdown table of the first `max_rows` rows (the total is stated when cut)."""
    if not rows:
        return dg.MetadataValue.md("_(empty)_")
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[:max_rows]:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    if len(rows) > max_rows:
        lines.append(f"\n_{max_rows} of {len(rows)} rows shown_")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|") if v is not None else ""


def md_image(png: bytes, alt: str = "image") -> dg.MetadataValue:
    """An inline PNG (data URI) that the Dagster UI renders in the metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")

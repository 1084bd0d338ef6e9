"""The benchmark report as markdown and as one self-contained HTML page (plots inlined as PNG).

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

import numpy as np

from ..music.pianoroll import figure_png, piano_roll_png
from .benchmark import OUTCOME_METRICS, BenchmarkResult
from .metrics import METRICS


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _sections(res: BenchmarkResult) -> list[tuple[str, str, list[dict], list[str]]]:
    """(title, intro, rows, columns) for every table of the report."""
    configs = [
        {"configuration": r.config.name, "backend": r.config.backend, "version": r.generator.get("version"), "checkpoint": r.generator.get("checkpoint") or "—",
         "options": str(r.config.options or {}), "melodies": len(r.melodies), "seconds": round(r.seconds, 2),
         "plagiarism_flags": sum(h.flagged for h in r.plagiarism), "max_similarity": max((h.max_similarity for h in r.plagiarism), default=None)}
        for r in res.configs
    ]
    means = []
    for r in res.configs:
        row = {"configuration": r.config.name}
        row.update({m: r.mean(m) for m in (*METRICS, "composite")})
        means.append(row)
    ref = {"configuration": "reference corpus"}
    for m in (*METRICS, "composite"):
        v = [s.get(m) for s in res.reference_scores if s.get(m) is not None]
        ref[m] = float(np.mean(v)) if v else None
    means.append(ref)
    oa = {}
    for row in res.set_level:
        oa.setdefault(row["configuration"], {})[row["metric"]] = row["overlapping_area"]
    set_rows = [{"configuration": c, "fd_features": res.fd.get(c), **{m: oa[c].get(m) for m in (*METRICS, "composite")}} for c in oa]
    paired_cols = ["metric", "a", "b", "n", "median_difference", "W", "p", "p_holm", "rank_biserial", "significant"]
    ref_cols = ["configuration", "metric", "n", "m", "U", "p", "cliffs_delta"]
    outcome_cols = ["configuration", *OUTCOME_METRICS, "composite_vs_reference", "human_preference"]
    return [
        ("Outcome table (the plan's)", "Means over the prompt set; the reference corpus is scored the same way. Human preference comes from the listening test.", res.outcome, outcome_cols),
        ("Configurations", f"{len(res.prompts)} prompts (key × progression × seed), every configuration on every prompt.", configs, list(configs[0]) if configs else []),
        ("Per-melody metrics (means)", "EVALUATION.md definitions; composite 0–1.", means, ["configuration", *METRICS, "composite"]),
        ("Set level against the reference corpus", "Overlapping area of the two kernel-density estimates per metric (1 = same distribution) and `fd_features`, the Fréchet distance between Gaussian fits of the feature vectors (shrinkage covariance; not the embedding-based FMD).", set_rows, ["configuration", "fd_features", *METRICS, "composite"]),
        ("Between configurations (paired by prompt)", "Wilcoxon signed-rank, Holm–Bonferroni across every metric × pair test, matched-pairs rank-biserial effect size.", res.paired, paired_cols),
        ("Against the reference corpus (independent samples)", "Mann–Whitney U (two-sided) and Cliff's δ.", res.vs_reference, ref_cols),
    ]


def render_markdown(res: BenchmarkResult, *, html_name: str = "benchmark_report.html") -> str:
    lines = ["# Benchmark report", "", f"**Gate:** {res.gate['text']}", "", f"Reference corpus: {len(res.reference_scores)} melodies, mean composite {_fmt(res.reference_composite)}. Plots: [{html_name}]({html_name}).", ""]
    for title, intro, rows, cols in _sections(res):
        lines += [f"## {title}", "", intro, ""]
        if not rows:
            lines += ["_(none)_", ""]
            continue
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |")
        lines.append("")
    flagged = [(r.config.name, res.prompts[i].prompt_id, h.max_similarity) for r in res.configs for i, h in enumerate(r.plagiarism) if h.flagged]
    lines += ["## Plagiarism", "", f"Generated melodies whose pitch-class trigram profile has cosine > 0.90 with a training example: {len(flagged)}.", ""]
    for name, pid, sim in flagged[:30]:
        lines.append(f"- {name} / {pid}: {sim:.3f}")
    return "\n".join(lines) + "\n"


def metric_figure(res: BenchmarkResult) -> bytes:
    """One box plot per metric: each configuration against the reference corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*METRICS, "composite"]
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    labels = [r.config.name for r in res.configs] + ["reference"]
    for ax, m in zip(axes.ravel(), names):
        data = [[v for v in r.values(m) if v is not None] for r in res.configs]
        data.append([s.get(m) for s in res.reference_scores if s.get(m) is not None])
        if any(len(d) for d in data):
            ax.boxplot([d if d else [np.nan] for d in data], tick_labels=labels, showfliers=False)
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    return figure_png(fig, dpi=80)


def best_and_worst(res: BenchmarkResult) -> list[tuple[str, bytes]]:
    out = []
    for r in res.configs:
        scored = [(s.get("composite"), i) for i, s in enumerate(r.scores) if s.get("composite") is not None]
        if not scored:
            continue
        best, worst = max(scored)[1], min(scored)[1]
        titles = [f"{r.config.name} best: {res.prompts[best].prompt_id} composite {r.scores[best]['composite']:.3f}",
                  f"{r.config.name} worst: {res.prompts[worst].prompt_id} composite {r.scores[worst]['composite']:.3f}"]
        out.append((r.config.name, piano_roll_png([r.melodies[best], r.melodies[worst]], titles=titles)))
    return out


def render_html(res: BenchmarkResult, metric_png: bytes, rolls: Sequence[tuple[str, bytes]]) -> str:
    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trance_assets benchmark report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        ".gate{padding:.8em;border-radius:6px;background:#fff4e5}.gate.ok{background:#e6f6e6}img{max-width:100%}</style></head><body>",
        "<h1>Benchmark report</h1>",
        f"<p class='gate{' ok' if res.gate.get('passed') else ''}'><b>Gate:</b> {html.escape(res.gate['text'])}</p>",
        f"<p>Reference corpus: {len(res.reference_scores)} melodies, mean composite {_fmt(res.reference_composite)}.</p>",
    ]
    for title, intro, rows, cols in _sections(res):
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(intro)}</p>")
        if not rows:
            parts.append("<p><i>(none)</i></p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Metric distributions against the reference corpus</h2>" + img(metric_png, "metric distributions"))
    parts.append("<h2>Best and worst examples</h2>")
    for name, png in rolls:
        parts.append(f"<h3>{html.escape(name)}</h3>" + img(png, f"{name} best and worst"))
    parts.append("</body></html>")
    return "\n".join(parts)

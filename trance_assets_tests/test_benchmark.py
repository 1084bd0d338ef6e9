"""The benchmark: the phase gate and the outcome table on hand-made results, `run_benchmark` on two
rule-engine configurations, and the markdown / HTML report."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest

from trance_assets.corpus.card import pitch_class_distribution
from trance_assets.evaluation.benchmark import OUTCOME_METRICS, ConfigResult, gate_decision, outcome_table, run_benchmark
from trance_assets.evaluation.metrics import METRICS
from trance_assets.evaluation.report import best_and_worst, metric_figure, render_html, render_markdown
from trance_assets.generation.base import Configuration, prompt_set
from trance_assets.music.rules import generate

ALL = (*METRICS, "composite")


def result(name: str, composites, **metrics) -> ConfigResult:
    """A ConfigResult with only scores: `composites` per prompt, other metrics as given."""
    scores = []
    for i, c in enumerate(composites):
        row = {"composite": c}
        for m, values in metrics.items():
            row[m] = values[i]
        scores.append(row)
    return ConfigResult(Configuration(name, "rules"), {"name": "rules"}, [], scores, 0.0)


def listening(a: str, b: str, win_rate: float, n: int) -> dict:
    return {"config_a": a, "config_b": b, "win_rate": win_rate, "n": n}


# ---- the gate ---------------------------------------------------------------------------------


def test_gate_names_a_low_composite_share():
    g = gate_decision([result("a", [0.6, 0.8]), result("b", [0.5, 0.5])], 0.8, listening("a", "b", 0.9, 10), 0.90, 0.70)
    # best a: mean 0.7, 0.7 / 0.8 = 87.5%; it wins 90% of the listening comparisons
    assert g["passed"] is False and g["best"] == "a"
    assert g["composite_share"] == pytest.approx(0.875)
    assert g["listening_win_rate"] == pytest.approx(0.9)
    assert g["text"] == "Not production-ready. Best configuration: a; gaps: its composite is 87.5% of the reference corpus's (needs > 90%)."


@pytest.mark.parametrize("heard", [None, {}, {"n": 0, "config_a": "a", "config_b": "b", "win_rate": None}])
def test_gate_names_a_listening_test_not_run(heard):
    g = gate_decision([result("a", [0.95, 0.95])], 1.0, heard, 0.90, 0.70)
    assert g["passed"] is False and g["best"] == "a" and g["listening_win_rate"] is None
    assert g["composite_share"] == pytest.approx(0.95)
    assert g["text"] == "Not production-ready. Best configuration: a; gaps: the listening test has not been run yet (no answers)."


def test_gate_passes_when_config_b_of_the_listening_test_is_best_and_wins():
    # best b (0.76 / 0.8 = 95%); the listening test reports a's win rate 0.2, so b wins 80%
    g = gate_decision([result("a", [0.5, 0.5]), result("b", [0.72, 0.80])], 0.8, listening("a", "b", 0.2, 20), 0.90, 0.70)
    assert g["passed"] is True and g["best"] == "b"
    assert g["listening_win_rate"] == pytest.approx(0.8)
    assert g["text"].startswith("Production-ready")
    assert g["text"] == "Production-ready: b reaches 95.0% of the reference composite and wins 80.0% of listening comparisons."


def test_gate_config_b_that_loses_the_listening_test():
    g = gate_decision([result("a", [0.5]), result("b", [0.76])], 0.8, listening("a", "b", 0.4, 20), 0.90, 0.70)
    assert g["passed"] is False and g["listening_win_rate"] == pytest.approx(0.6)
    assert g["text"] == "Not production-ready. Best configuration: b; gaps: it wins 60.0% of 20 listening comparisons against a (needs > 70%)."


def test_gate_both_gaps_and_a_listening_test_of_other_configurations():
    g = gate_decision([result("a", [0.4]), result("c", [0.6])], 0.8, listening("a", "b", 0.9, 10), 0.90, 0.70)
    assert g["best"] == "c" and g["passed"] is False and g["listening_win_rate"] is None
    assert g["text"] == (
        "Not production-ready. Best configuration: c; gaps: its composite is 75.0% of the reference corpus's (needs > 90%); "
        "the listening test compared a with b, not c."
    )


def test_gate_thresholds_are_strict():
    # exactly 90% of the reference and exactly 70% of the comparisons are not enough
    g = gate_decision([result("a", [0.45])], 0.5, listening("a", "b", 0.7, 10), 0.90, 0.70)
    assert g["composite_share"] == 0.9
    assert g["passed"] is False
    assert "its composite is 90.0% of the reference corpus's (needs > 90%)" in g["text"]
    assert "it wins 70.0% of 10 listening comparisons against b (needs > 70%)" in g["text"]
    # custom thresholds are used
    g = gate_decision([result("a", [0.45])], 0.5, listening("a", "b", 0.7, 10), 0.85, 0.65)
    assert g["passed"] is True


def test_gate_without_a_reference_or_configurations():
    for results, ref in (([], 0.8), ([result("a", [0.5])], None), ([result("a", [0.5])], 0.0)):
        g = gate_decision(results, ref, listening("a", "b", 0.9, 10), 0.90, 0.70)
        assert g == {"passed": False, "best": None, "text": "No decision: no configuration or no reference corpus to compare with."}


# ---- the outcome table ------------------------------------------------------------------------


def hand_results():
    a = result("a", [0.6, 0.8, None], pitch_entropy=[2.0, 3.0, 4.0], chord_tone_ratio=[0.5, 1.0, float("nan")],
               self_similarity_8=[None, None, None], kl_to_reference=[0.1, 0.3, 0.2])  # fmt: skip
    b = result("b", [0.4, 0.4, 0.4], pitch_entropy=[1.0, 1.0, 1.0], chord_tone_ratio=[0.9, 0.9, 0.9],
               self_similarity_8=[0.5, 0.7, 0.9], kl_to_reference=[0.0, 0.0, 0.3])  # fmt: skip
    ref = [
        {"composite": 0.9, "pitch_entropy": 3.0, "chord_tone_ratio": 0.8, "self_similarity_8": 1.0, "kl_to_reference": 0.0},
        {"composite": 0.7, "pitch_entropy": 2.0, "chord_tone_ratio": None, "self_similarity_8": 0.5, "kl_to_reference": 0.5},
    ]
    return [a, b], ref


def test_outcome_table_rows_without_answers():
    results, ref = hand_results()
    rows = outcome_table(results, ref, 0.8, None)
    assert [r["configuration"] for r in rows] == ["a", "b", "reference corpus"]
    a, b, r = rows
    assert set(a) == {"configuration", *OUTCOME_METRICS, "composite_vs_reference", "human_preference"}
    assert a["composite"] == pytest.approx(0.7)  # None left out
    assert a["pitch_entropy"] == pytest.approx(3.0)
    assert a["chord_tone_ratio"] == pytest.approx(0.75)  # NaN left out
    assert a["self_similarity_8"] is None
    assert a["kl_to_reference"] == pytest.approx(0.2)
    assert a["composite_vs_reference"] == pytest.approx(0.7 / 0.8)
    assert b["composite"] == pytest.approx(0.4) and b["composite_vs_reference"] == pytest.approx(0.5)
    assert b["self_similarity_8"] == pytest.approx(0.7) and b["kl_to_reference"] == pytest.approx(0.1)
    assert a["human_preference"] == b["human_preference"] == "not yet run"
    assert r["composite"] == pytest.approx(0.8) and r["pitch_entropy"] == pytest.approx(2.5)
    assert r["chord_tone_ratio"] == pytest.approx(0.8) and r["self_similarity_8"] == pytest.approx(0.75)
    assert r["kl_to_reference"] == pytest.approx(0.25)
    assert r["composite_vs_reference"] == 1.0 and r["human_preference"] == "—"
    # no answers is the same as no listening test
    assert outcome_table(results, ref, 0.8, listening("a", "b", None, 0)) == rows


def test_outcome_table_with_listening_results():
    results, ref = hand_results()
    results.append(result("c", [0.5]))
    rows = outcome_table(results, ref, 0.8, listening("a", "b", 0.75, 12))
    pref = {r["configuration"]: r["human_preference"] for r in rows}
    assert pref == {"a": "75.0% of 12 (a vs b)", "b": "25.0% of 12 (a vs b)", "c": "not yet run", "reference corpus": "—"}


def test_outcome_table_without_a_reference_composite():
    results, _ = hand_results()
    rows = outcome_table(results, [], None, None)
    assert [r["composite_vs_reference"] for r in rows] == [None, None, None]
    assert rows[-1]["composite"] is None


# ---- run_benchmark + report ------------------------------------------------------------------

CONFIGS = [Configuration("rules", "rules"), Configuration("rules-dense", "rules", {"density": 0.75, "chord_tone_bias": 0.7})]


@pytest.fixture(scope="module")
def bench():
    prompts = prompt_set(4)
    reference = [
        generate(k, 140, prog, 16, seed=100 + i)
        for i, (k, prog) in enumerate(
            [("Am", ["Am", "F", "C", "G"]), ("Em", ["Em", "C", "G", "D"]), ("Dm", ["Dm", "Bb", "F", "C"]), ("Gm", ["Gm", "Eb", "Bb", "F"]), ("Bm", ["Bm", "G", "D", "A"])]
        )
    ]
    q = pitch_class_distribution([m.key for m in reference], [m.pitches for m in reference], [[n.duration for n in m.notes] for m in reference])
    # The training set holds an exact copy of what "rules" makes for p002 (a copied melody).
    p2 = prompts[2]
    copied = CONFIGS[0].make().generate(p2.key, p2.bpm, list(p2.chords), p2.bars, p2.seed)
    training = [[60, 62, 64], [n.pitch for n in copied.notes], [n.pitch + 12 for n in reference[0].notes]]
    log: list[str] = []
    res = run_benchmark(CONFIGS, prompts, reference, q, training_pitch_sequences=training, log=log.append)
    return res, prompts, reference, q, log


def test_run_benchmark_per_config_scores(bench):
    res, prompts, _, _, log = bench
    assert [r.config.name for r in res.configs] == ["rules", "rules-dense"]
    assert res.prompts == prompts
    for r, cfg in zip(res.configs, CONFIGS):
        assert r.generator["name"] == "rules" and r.generator["options"] == cfg.options
        assert len(r.melodies) == len(r.scores) == 4
        gen = cfg.make()
        for p, m in zip(prompts, r.melodies):
            assert m == gen.generate(p.key, p.bpm, list(p.chords), p.bars, p.seed)
            assert m.key == p.key and [c.symbol for c in m.chords[:4]] == list(p.chords)
        for s in r.scores:
            assert set(ALL) <= set(s)
            assert s["kl_to_reference"] is not None and s["kl_to_reference"] >= 0
            assert s["self_similarity_16"] is None  # 16 bars
            assert 0 < s["composite"] <= 1
        assert r.seconds >= 0
    assert [r.scores for r in res.configs][0] != [r.scores for r in res.configs][1]
    assert len(log) == 2 and log[0].startswith("rules: 4 melodies") and log[1].startswith("rules-dense: 4 melodies")


def test_run_benchmark_reference(bench):
    res, _, reference, _, _ = bench
    assert len(res.reference_scores) == 5 and res.reference_melodies == reference
    comps = [s["composite"] for s in res.reference_scores]
    assert res.reference_composite == pytest.approx(float(np.mean(comps)))
    assert res.outcome[-1]["composite"] == pytest.approx(res.reference_composite)


def test_run_benchmark_set_level_rows(bench):
    res, *_ = bench
    assert len(res.set_level) == 2 * len(ALL)
    assert {(r["configuration"], r["metric"]) for r in res.set_level} == {(c, m) for c in ("rules", "rules-dense") for m in ALL}
    for r in res.set_level:
        if r["metric"] == "self_similarity_16":
            assert r["overlapping_area"] is None
        elif r["overlapping_area"] is not None:
            assert 0.0 <= r["overlapping_area"] <= 1.0
    assert set(res.fd) == {"rules", "rules-dense"}
    assert all(v is not None and v >= 0 for v in res.fd.values())


def test_run_benchmark_paired_and_reference_rows(bench):
    res, *_ = bench
    assert len(res.paired) == len(ALL)  # one pair of configurations x every metric
    assert [r["metric"] for r in res.paired] == list(ALL)
    assert {(r["a"], r["b"]) for r in res.paired} == {("rules", "rules-dense")}
    by_metric = {r["metric"]: r for r in res.paired}
    assert by_metric["self_similarity_16"]["n"] == 0 and by_metric["self_similarity_16"]["p"] is None
    assert by_metric["composite"]["n"] == 4
    d = [a["composite"] - b["composite"] for a, b in zip(res.configs[0].scores, res.configs[1].scores)]
    assert by_metric["composite"]["median_difference"] == pytest.approx(float(np.median(d)))
    assert len(res.vs_reference) == 2 * len(ALL)
    assert {(r["configuration"], r["metric"]) for r in res.vs_reference} == {(c, m) for c in ("rules", "rules-dense") for m in ALL}
    comp = next(r for r in res.vs_reference if r["configuration"] == "rules" and r["metric"] == "composite")
    assert (comp["n"], comp["m"]) == (4, 5)


def test_run_benchmark_plagiarism(bench):
    res, *_ = bench
    rules, dense = res.configs
    assert len(rules.plagiarism) == len(dense.plagiarism) == 4
    assert [h.flagged for h in rules.plagiarism] == [False, False, True, False]
    assert rules.plagiarism[2].max_similarity == pytest.approx(1.0) and rules.plagiarism[2].nearest == 1
    assert not any(h.flagged for h in dense.plagiarism)


def test_run_benchmark_gate_and_outcome_without_listening(bench):
    res, *_ = bench
    assert res.listening is None
    assert res.gate["passed"] is False
    assert "the listening test has not been run yet (no answers)" in res.gate["text"]
    assert [r["configuration"] for r in res.outcome] == ["rules", "rules-dense", "reference corpus"]
    assert [r["human_preference"] for r in res.outcome] == ["not yet run", "not yet run", "—"]
    for row, r in zip(res.outcome, res.configs):
        assert row["composite"] == pytest.approx(float(np.mean([s["composite"] for s in r.scores])))
        assert row["composite_vs_reference"] == pytest.approx(row["composite"] / res.reference_composite)
    best = max(res.outcome[:2], key=lambda r: r["composite"])["configuration"]
    assert res.gate["best"] == best


def test_run_benchmark_with_listening_results(bench):
    _, prompts, reference, q, _ = bench
    heard = {"config_a": "rules", "config_b": "rules-dense", "win_rate": 0.25, "n": 8}
    res = run_benchmark(CONFIGS, prompts[:2], reference, q, listening=heard, log=lambda *a: None)
    pref = {r["configuration"]: r["human_preference"] for r in res.outcome}
    assert pref["rules"] == "25.0% of 8 (rules vs rules-dense)"
    assert pref["rules-dense"] == "75.0% of 8 (rules vs rules-dense)"
    expected = 0.25 if res.gate["best"] == "rules" else 0.75
    assert res.gate["listening_win_rate"] == pytest.approx(expected)
    # no training set: nothing flagged
    assert all(not h.flagged and h.nearest is None for r in res.configs for h in r.plagiarism)


OUTCOME_HEADER = "| configuration | pitch_entropy | chord_tone_ratio | self_similarity_8 | kl_to_reference | composite | composite_vs_reference | human_preference |"


def test_render_markdown(bench):
    res, *_ = bench
    md = render_markdown(res)
    assert md.startswith("# Benchmark report\n")
    assert f"**Gate:** {res.gate['text']}" in md
    assert OUTCOME_HEADER in md
    for title in ("## Outcome table (the plan's)", "## Configurations", "## Per-melody metrics (means)", "## Set level against the reference corpus",
                  "## Between configurations (paired by prompt)", "## Against the reference corpus (independent samples)", "## Plagiarism"):  # fmt: skip
        assert title in md
    assert "Reference corpus: 5 melodies" in md
    assert "[benchmark_report.html](benchmark_report.html)" in md
    assert "with a training example: 1." in md
    assert "- rules / p002: 1.000" in md
    # outcome rows: one per configuration and the reference
    rows = [line for line in md.splitlines() if re.match(r"\| (rules|rules-dense|reference corpus) \|.*\| (not yet run|—) \|$", line)]
    assert len(rows) == 3


def test_render_html(bench):
    res, *_ = bench
    metric_png = metric_figure(res)
    rolls = best_and_worst(res)
    assert metric_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert [name for name, _ in rolls] == ["rules", "rules-dense"]
    page = render_html(res, metric_png, rolls)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</body></html>")
    header = "<tr>" + "".join(f"<th>{c}</th>" for c in ("configuration", *OUTCOME_METRICS, "composite_vs_reference", "human_preference")) + "</tr>"
    assert header in page
    assert html.escape(res.gate["text"]) in page
    assert "<p class='gate'>" in page  # not passed: no "ok" style
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 1 + len(rolls)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert base64.b64decode(images[0]) == metric_png
    assert "<td>reference corpus</td>" in page and "<td>not yet run</td>" in page


def test_render_html_marks_a_passed_gate(bench):
    res, *_ = bench
    passed = dict(res.gate, passed=True, text="Production-ready: <b> test")
    res2 = type(res)(**{**res.__dict__, "gate": passed})
    page = render_html(res2, metric_figure(res2), [])
    assert "<p class='gate ok'><b>Gate:</b> Production-ready: &lt;b&gt; test</p>" in page

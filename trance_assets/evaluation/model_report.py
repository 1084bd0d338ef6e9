"""The plan's success criteria for a trained model family, measured end to end (the recipe the
`models/*_trance` assets run; the single measurements live in `model_criteria`).

Each function returns ``{"rows": {check_name: criterion row}, ...details}``; a criterion row is
``{"criterion", "value", "threshold", "passed", "detail"}`` (`model_criteria`). Check names are
fixed (`LOSS_CHECKS`, `MELODY_RNN_CHECKS`, `MUSICVAE_CHECKS`) so the Dagster layer can declare them.

Data: only held-out material — the corpus ``test`` split (Tiers 1 and 2, the trance tiers) for
the MusicVAE, and a fixed prompt set (`generation.base.prompt_set`) for the Melody RNN.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import model_criteria as mc

LOSS_CHECKS = ("val_loss_decreases", "val_loss_plateaus", "train_val_gap")
MELODY_RNN_CHECKS = ("chord_tone_gain", "minor_histogram", "self_similarity_increases")
MUSICVAE_CHECKS = ("reconstruction_accuracy", "interpolation_intermediates", "variations_in_key")

__all__ = ["LOSS_CHECKS", "MELODY_RNN_CHECKS", "MUSICVAE_CHECKS", "loss_report", "melody_rnn_report", "musicvae_report"]


def _unmeasurable(criterion: str, why: str) -> dict:
    return {"criterion": criterion, "value": None, "threshold": "", "passed": False, "detail": why}


def loss_report(stages: Sequence[dict]) -> dict:
    """Loss criteria on the last stage that trained (`models.pipeline.StageReport` dicts); every
    trained stage's best / final numbers in ``stages``."""
    trained = [s for s in stages if s.get("result")]
    summary = [
        {
            "stage": s["name"], "tiers": s["tiers"], "train_examples": s["train_examples"], "val_examples": s["val_examples"],
            "steps": s["result"]["steps"] if s.get("result") else 0,
            "best_step": s["result"]["best_step"] if s.get("result") else None,
            "best_val_loss": s["result"]["best_val_loss"] if s.get("result") else None,
            "train_val_gap": s["result"]["train_val_gap"] if s.get("result") else None,
            "stopped_early": s["result"]["stopped_early"] if s.get("result") else None,
            "skipped": s.get("skipped") or "",
        }
        for s in stages
    ]
    if not trained:
        why = "no stage trained (" + "; ".join(s.get("skipped") or "no stages" for s in stages) + ")" if stages else "no training stages"
        rows = {name: _unmeasurable(name.replace("_", " "), why) for name in LOSS_CHECKS}
        return {"rows": rows, "stages": summary}
    last = trained[-1]["result"]
    r = mc.loss_criteria([tuple(x) for x in last["curve"]], stopped_early=bool(last["stopped_early"]))
    for row in r:
        row["detail"] = f"stage {trained[-1]['name']}: " + (row.get("detail") or "")
    return {"rows": dict(zip(LOSS_CHECKS, r)), "stages": summary}


def melody_rnn_report(base_dir: str | os.PathLike, tuned_dir: str | os.PathLike, prompts: Sequence, *, min_chord_tone_gain: float = 0.10, temperature: float = 1.0) -> dict:
    """Chord-tone gain, minor-like histogram and 8-bar self-similarity of the fine-tuned Melody
    RNN against its base, generating one melody per prompt from each (same prompts, same seeds)."""
    from ..generation.models import MelodyRNNGenerator

    base = MelodyRNNGenerator(str(base_dir), temperature=temperature)
    tuned = MelodyRNNGenerator(str(tuned_dir), temperature=temperature)
    gen = lambda g: [g.generate(p.key, p.bpm, list(p.chords), p.bars, p.seed) for p in prompts]  # noqa: E731
    base_m, tuned_m = gen(base), gen(tuned)
    res = mc.generation_criteria(base_m, tuned_m, min_chord_tone_gain=min_chord_tone_gain)
    rows = dict(zip(MELODY_RNN_CHECKS, res["rows"]))
    return {"rows": rows, "base": res["base"], "tuned": res["tuned"], "prompts": len(prompts),
            "histogram": mc.pc_minor_likeness(tuned_m)["histogram"], "base_histogram": mc.pc_minor_likeness(base_m)["histogram"]}


def musicvae_report(
    model_dir: str | os.PathLike, corpus_dir: str | os.PathLike, *, quality_thresholds, interpolation_steps: int = 10,
    noise_scale: float = 0.2, min_compliance: float = 0.9, min_accuracy: float = 0.5, seed: int = 0,
) -> dict:
    """Reconstruction accuracy on the held-out trance windows (test split, Tiers 1-2), an
    interpolation between two held-out melodies (in the same key when the split has such a pair)
    and variations of a held-out melody at `noise_scale`."""
    from ..formats.notesequence import notesequence_to_arrays
    from ..models.datasets import musicvae_examples
    from ..models.musicvae import MusicVAE
    from ..models.pipeline import load_split_sequences

    model = MusicVAE.load(model_dir)
    model.eval()
    seqs = load_split_sequences(corpus_dir, "test", (1, 2))
    x, ids = musicvae_examples(seqs, bars=model.config.bars, return_ids=True)
    meta = {ns.id: notesequence_to_arrays(ns) for ns in seqs}
    recon = mc.vae_reconstruction(model, x)
    rows = {"reconstruction_accuracy": mc.vae_reconstruction_row(recon, min_accuracy=min_accuracy)}
    details: dict = {"reconstruction": recon, "test_windows": int(len(x))}
    # One window per source melody (augmented copies, "<source>~<transform>", share their source's
    # split, so they would make a pair of near-duplicates): originals first; the pair is the first
    # two different sources sharing a key.
    first: dict[str, int] = {}
    for i, sid in sorted(enumerate(ids), key=lambda t: ("~" in t[1], t[0])):
        first.setdefault(sid.split("~", 1)[0], i)
    keyed = [(ids[i], i, meta[ids[i]]["key"], meta[ids[i]]["bpm"]) for i in sorted(first.values()) if meta[ids[i]]["key"]]
    pair = None
    for a in range(len(keyed)):
        for b in range(a + 1, len(keyed)):
            if keyed[a][2] == keyed[b][2]:
                pair = (keyed[a], keyed[b])
                break
        if pair:
            break
    if pair is None and len(keyed) >= 2:
        pair = (keyed[0], keyed[1])
    if pair is None:
        why = f"fewer than two held-out 16-bar trance source melodies with a key in the test split ({len(keyed)})"
        rows["interpolation_intermediates"] = _unmeasurable("interpolation has no garbage intermediates", why)
        rows["variations_in_key"] = _unmeasurable(f"variations at noise_scale {noise_scale:g} stay in key", why)
        return {"rows": rows, **details}
    (sa, ia, key, bpm), (sb, ib, _, _) = pair
    interp = mc.vae_interpolation(model, x[ia], x[ib], key=key, bpm=float(bpm), n_intermediates=interpolation_steps, thresholds=quality_thresholds)
    rows["interpolation_intermediates"] = mc.vae_interpolation_row(interp)
    rows["interpolation_intermediates"]["detail"] = f"{sa} -> {sb} ({key}); " + rows["interpolation_intermediates"].get("detail", "")
    var = mc.vae_variations_in_key(model, x[ia], key=key, bpm=float(bpm), noise_scale=noise_scale, seed=seed, min_scale_compliance=min_compliance)
    rows["variations_in_key"] = mc.vae_variations_row(var)
    rows["variations_in_key"]["detail"] = f"variations of {sa} ({key}); " + rows["variations_in_key"].get("detail", "")
    details.update({"interpolation": interp, "variations": var, "pair": [sa, sb], "key": key})
    return {"rows": rows, **{k: v for k, v in details.items()}}


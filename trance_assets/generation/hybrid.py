"""The rule-constrained hybrid generator ("hybrid"): the rule engine lays out, the models propose,
the quality rules validate, the best composite wins. The plan's Phase 1 / Phase 2 configurations
are this backend with base or fine-tuned checkpoints.

For one prompt (key, tempo, chords, bars, seed):

1. **Layout** — the rule engine (`music.rules.generate`, options ``rules``) writes the phrase plan:
   one chord per bar (the progression cycling), a `motif_bars` opening motif, the register. Its own
   melody is candidate ``rules``.
2. **Melody RNN continuations** (``melody_rnn`` checkpoint) — the rule melody's first
   ``motif_bars`` bars, moved into the model's C frame (`to_c_frame`), prime ``rnn_candidates``
   continuations to ``bars * 16`` steps, chord-conditioned when the model is; back in the prompt
   key they are candidates ``rnn:<i>``.
3. **MusicVAE** (``musicvae`` checkpoint) — ``vae_samples`` decodes of z ~ N(0, I) at
   ``vae_temperature`` (key estimated and moved to the prompt key, as the ``musicvae`` backend
   does), candidates ``vae:<i>``; then ``vae_variations`` variations of the best valid model
   candidate so far (the rule melody when none is valid):
   its first 16 bars encoded, ``z = mu + noise_scale * N(0, I)``, greedy decode, candidates
   ``variation:<i>`` (in the key of the melody they vary).
4. **Validation and choice** — every candidate is checked with the corpus quality rules
   (`music.quality.check_melody`, the thresholds of Tier ``quality_tier``); the valid model
   candidate with the highest composite score (`evaluation.metrics.score_melody`, KL against
   ``reference_pc`` when given) wins. The rule melody is the layout, not a competitor (it is
   written for the very metrics the composite measures, and would hide what the models add); with
   ``rules_compete=True`` it competes too. When no model candidate passes, the rule melody is the
   answer and ``rules_fallback`` says so; on very short prompts (1-2 bars hold fewer than the
   minimum notes) it can fail the rules itself, which ``valid: False`` records.

Every random draw is seeded from the prompt seed (candidate i of a family uses
``seed * 1000 + offset + i``), so the result is a pure function of the arguments and weights. The
returned Melody's ``attributes`` hold the winner, every candidate's source, validity, composite and
rejection reason — the audit trail of the choice.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..music.melody import Melody
from ..music.quality import QualityThresholds, check_melody
from ..music.rules import RuleParams
from ..music.rules import generate as rules_generate
from .base import GeneratorInfo, register, validate_prompt
from .models import (
    STEPS_PER_BAR,
    MelodyRNNGenerator,
    MusicVAEGenerator,
    _check_temperature,
    _nearest_shift,
    _torch_generator,
    c_frame_chord_rows,
    events_to_notes,
    major_tonic,
    prompt_melody,
    sample_rnn_events,
    shift_to_key,
)

HYBRID_VERSION = "1.0"
NO_EVENT, NOTE_OFF = -2, -1
C_FRAME_LOW, C_FRAME_HIGH = 48, 84  # the Melody RNN's squashed range

__all__ = ["HybridGenerator", "melody_to_events", "to_c_frame"]


def melody_to_events(melody: Melody, steps: int) -> list[int]:
    """A monophonic Melody as `steps` 16th-note events: a note-on at each onset, NOTE_OFF where a
    note ends before the next onset, NO_EVENT elsewhere (overlaps: the later onset wins; notes
    starting on the same step: the highest, as `extract_melodies` keeps the top line)."""
    ev = [NO_EVENT] * steps
    notes = sorted(melody.notes, key=lambda n: (n.start, n.pitch))  # same onset: the highest note wins
    for k, n in enumerate(notes):
        s = int(round(n.start * 4))
        e = int(round((n.start + n.duration) * 4))
        if not 0 <= s < steps:
            continue
        ev[s] = int(n.pitch)
        nxt = int(round(notes[k + 1].start * 4)) if k + 1 < len(notes) else steps
        if s < e < min(nxt, steps) and ev[e] == NO_EVENT:
            ev[e] = NOTE_OFF
    return ev


def to_c_frame(events: Sequence[int], frame: int) -> list[int]:
    """Events transposed from a key whose major tonic is `frame` into C (nearest shift), note-ons
    folded by octaves into the Melody RNN's range [48, 84)."""
    shift = -_nearest_shift(frame)
    out = []
    for e in events:
        if e >= 0:
            e = e + shift
            while e < C_FRAME_LOW:
                e += 12
            while e >= C_FRAME_HIGH:
                e -= 12
        out.append(int(e))
    return out


class HybridGenerator:
    """See the module docstring. Options: ``melody_rnn`` / ``musicvae`` checkpoint folders (at least
    one), candidate counts, temperatures, ``noise_scale``, ``motif_bars``, ``quality_tier``,
    ``reference_pc`` (12 numbers), ``rules`` (rule-engine options), ``label`` (a name for reports),
    ``rules_compete`` (the rule melody competes with the model candidates)."""

    name = "hybrid"

    def __init__(
        self,
        melody_rnn: str | None = None,
        musicvae: str | None = None,
        rnn_candidates: int = 4,
        vae_samples: int = 2,
        vae_variations: int = 2,
        temperature: float = 1.0,
        vae_temperature: float = 0.5,
        noise_scale: float = 0.2,
        motif_bars: int = 2,
        quality_tier: int = 2,
        reference_pc: Sequence[float] | None = None,
        rules: dict | None = None,
        label: str = "hybrid",
        rules_compete: bool = False,
    ) -> None:
        if not melody_rnn and not musicvae:
            raise ValueError("hybrid: give at least one model checkpoint (melody_rnn=... and/or musicvae=...)")
        for name, v in (("rnn_candidates", rnn_candidates), ("vae_samples", vae_samples), ("vae_variations", vae_variations)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"hybrid: {name} must be an integer >= 0, got {v!r}")
        if isinstance(motif_bars, bool) or not isinstance(motif_bars, int) or motif_bars < 1:
            raise ValueError(f"hybrid: motif_bars must be an integer >= 1, got {motif_bars!r}")
        if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or noise_scale < 0:
            raise ValueError(f"hybrid: noise_scale must be a number >= 0, got {noise_scale!r}")
        self.thresholds = QualityThresholds.for_tier(quality_tier)  # ValueError for a bad tier
        self.rules = dict(rules or {})
        try:
            RuleParams(**self.rules).validate()
        except TypeError as e:
            raise ValueError(f"hybrid: bad rule-engine option in rules={self.rules!r}: {e}") from None
        self.reference_pc = None if reference_pc is None else np.asarray(reference_pc, dtype=float)
        if self.reference_pc is not None and self.reference_pc.shape != (12,):
            raise ValueError(f"hybrid: reference_pc must be 12 numbers, got {reference_pc!r}")
        self.rnn = MelodyRNNGenerator(melody_rnn, temperature=temperature) if melody_rnn else None
        self.vae = MusicVAEGenerator(musicvae, temperature=vae_temperature) if musicvae else None
        self.rnn_candidates = rnn_candidates if self.rnn else 0
        self.vae_samples = vae_samples if self.vae else 0
        self.vae_variations = vae_variations if self.vae else 0
        self.temperature = _check_temperature(temperature)
        self.noise_scale = float(noise_scale)
        self.motif_bars = motif_bars
        self.quality_tier = quality_tier
        if not isinstance(rules_compete, bool):
            raise ValueError(f"hybrid: rules_compete must be true or false, got {rules_compete!r}")
        self.rules_compete = rules_compete
        parts = [f"rnn:{self.rnn.info.checkpoint}" if self.rnn else None, f"vae:{self.vae.info.checkpoint}" if self.vae else None]
        versions = "+".join(g.info.version for g in (self.rnn, self.vae) if g)
        options = {
            "melody_rnn": melody_rnn, "musicvae": musicvae, "rnn_candidates": rnn_candidates,
            "vae_samples": vae_samples, "vae_variations": vae_variations, "temperature": temperature,
            "vae_temperature": vae_temperature, "noise_scale": noise_scale, "motif_bars": motif_bars,
            "quality_tier": quality_tier, "rules": self.rules, "label": label, "rules_compete": rules_compete,
            "reference_pc": None if reference_pc is None else [float(x) for x in reference_pc],
        }
        self.info = GeneratorInfo(
            name=self.name,
            version=f"hybrid-{HYBRID_VERSION}+{versions}",
            checkpoint=";".join(p for p in parts if p),
            description=f"{label}: rule-engine layout, candidates from "
            + " and ".join(x for x in ("Melody RNN" if self.rnn else "", "MusicVAE" if self.vae else "") if x)
            + f", Tier {quality_tier} quality rules, best model composite wins (rule melody as fallback"
            + (", competing" if rules_compete else "") + ")",
            options=options,
        )

    # ------------------------------------------------------------------------------ candidates
    def _rnn_candidates(self, layout: Melody, key_obj, chords, bars: int, seed: int) -> list[tuple[str, list[int], int]]:
        total = bars * STEPS_PER_BAR
        frame = major_tonic(key_obj)
        motif = to_c_frame(melody_to_events(layout, total)[: min(self.motif_bars, bars) * STEPS_PER_BAR], frame)
        seeds = [seed * 1000 + i for i in range(self.rnn_candidates)]
        rows = c_frame_chord_rows(self.rnn.model, chords, bars, frame)
        conts = sample_rnn_events(self.rnn.model, motif, total, rows, self.temperature, seeds)
        return [(f"rnn:{i}", ev, _nearest_shift(frame)) for i, ev in enumerate(conts)]

    def _vae_sample_events(self, seed: int) -> list[list[int]]:
        from ..models.musicvae import classes_to_events

        model = self.vae.model
        out = []
        for i in range(self.vae_samples):
            g = _torch_generator(seed * 1000 + 500 + i)
            z = torch.randn(1, model.config.z_size, generator=g)
            with torch.no_grad():
                classes = model.sample(z, greedy=False, temperature=self.vae.temperature, generator=g)
            out.append(classes_to_events(classes[0]))
        return out

    def _vae_variations(self, melody: Melody, seed: int) -> list[list[int]]:
        from ..models.musicvae import classes_to_events, events_to_classes

        model = self.vae.model
        steps = model.config.steps
        ev = melody_to_events(melody, steps)
        ev = [e if (e < 0 or 21 <= e <= 108) else NO_EVENT for e in ev]
        x = torch.as_tensor(events_to_classes(np.asarray(ev, dtype=np.int64)))[None]
        g = _torch_generator(seed * 1000 + 800)
        with torch.no_grad():
            classes = model.variations(x, self.vae_variations, noise_scale=self.noise_scale, generator=g)
        return [classes_to_events(c) for c in classes]

    # ------------------------------------------------------------------------------ generate
    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody:
        from ..evaluation.metrics import score_melody
        key_obj, chords = validate_prompt(key, bpm, chord_progression, bars, seed)
        bars = int(bars)
        total = bars * STEPS_PER_BAR
        symbols = [c.symbol for c in chords]
        layout = rules_generate(key_obj, bpm, symbols, bars, seed, **self.rules)
        layout = replace(layout, attributes={**layout.attributes, "source": "rules"})
        candidates: list[tuple[str, Melody]] = [("rules", layout)]

        def from_events(source: str, events: list[int], shift: int | None) -> Melody:
            events = (events * (-(-total // max(len(events), 1))))[:total]  # repeat a short decode
            if shift is None:  # key unknown (VAE sample): estimate, move to the prompt key
                shift = shift_to_key(events, key_obj)[1]
            notes = events_to_notes(events, transpose=shift)
            return prompt_melody(notes, key_obj, bpm, chords, bars, f"{self.name}_{source}", {"source": source})

        if self.rnn_candidates:
            for source, ev, shift in self._rnn_candidates(layout, key_obj, chords, bars, seed):
                candidates.append((source, from_events(source, ev, shift)))
        if self.vae_samples:
            for i, ev in enumerate(self._vae_sample_events(seed)):
                candidates.append((f"vae:{i}", from_events(f"vae:{i}", ev, None)))

        table: list[dict] = []
        scored: dict[str, float | None] = {}

        def assess(source: str, m: Melody) -> None:
            report = check_melody(m, self.thresholds)
            comp = score_melody(m, self.reference_pc).get("composite") if report.passed else None
            scored[source] = comp
            table.append({"source": source, "notes": len(m.notes), "valid": report.passed, "composite": comp, "reason": report.reason()})

        for source, m in candidates:
            assess(source, m)

        def best_so_far() -> tuple[str, Melody]:
            valid = [(scored[s], i, s, m) for i, (s, m) in enumerate(candidates)
                     if scored.get(s) is not None and (s != "rules" or self.rules_compete)]
            if not valid:
                return "rules", layout
            _, _, s, m = max(valid, key=lambda t: (t[0], -t[1]))  # ties: the earlier candidate
            return s, m

        if self.vae_variations:
            base_source, base = best_so_far()
            for i, ev in enumerate(self._vae_variations(base, seed)):
                source = f"variation:{i}<{base_source}"
                m = from_events(source, ev, 0)
                candidates.append((source, m))
                assess(source, m)

        winner_source, winner = best_so_far()
        fallback = all(scored.get(s) is None for s, _ in candidates if s != "rules")  # no valid model candidate
        return prompt_melody(
            winner.notes, key_obj, bpm, chords, bars, f"{self.info.options['label']}_{key_obj.name}_{seed}",
            {
                "generator": self.name,
                "generator_version": self.info.version,
                "checkpoint": self.info.checkpoint,
                "seed": int(seed),
                "progression": symbols,
                "winner": winner_source,
                "winner_composite": scored.get(winner_source),
                "valid": scored.get(winner_source) is not None,
                "candidates": table,
                "valid_candidates": sum(1 for r in table if r["valid"]),
                "model_candidates_valid": sum(1 for r in table if r["valid"] and r["source"] != "rules"),
                "rules_fallback": fallback,
                "layout_sha1": hashlib.sha1(repr([(n.start, n.pitch, n.duration) for n in layout.notes]).encode()).hexdigest()[:12],
            },
        )


register("hybrid", HybridGenerator)

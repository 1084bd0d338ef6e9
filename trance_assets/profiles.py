"""Run profiles: every size, limit and threshold the pipeline uses comes from here.

`demo` (the default) is small enough to run end to end on a 2-core CPU in minutes; `full` carries
the plan's sizes. Assets read a Profile through the settings resource, never module constants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    # reference audio
    max_audio_seconds: float = 20 * 60
    silence_dbfs: float = -60.0
    # inbox sensor
    settle_seconds: float = 2.0
    max_new_files_per_tick: int = 200
    # Tier 3 synthetic melodies from the rule engine
    synthetic_count: int = 48
    synthetic_bars: tuple[int, ...] = (8, 16)
    synthetic_bpm_range: tuple[int, int] = (128, 145)
    synthetic_seed: int = 2026
    # demo data
    demo_tracks: int = 12
    demo_tier1_extra: int = 8
    # Tier 3 public domain (music21 corpus), re-timed to one trance tempo
    public_domain_count: int = 150
    public_domain_bpm: float = 138.0
    public_domain_collections: tuple[str, ...] = ("essen", "ryans_mammoth", "oneills")
    # Tier 3 GigaMIDI filter
    gigamidi_styles: tuple[str, ...] = ("trance", "electronic", "electronica", "edm", "techno", "house", "dance", "eurodance", "progressive")
    gigamidi_bpm_range: tuple[float, float] = (130.0, 150.0)
    gigamidi_max_files: int = 500
    # corpus quality filter (EVALUATION.md), per tier where it differs
    quality_min_notes: int = 8
    quality_range_octaves: tuple[float, float] = (1.0, 3.0)
    quality_bpm_range: tuple[float, float] = (120.0, 160.0)
    quality_max_polyphony: float = 0.30
    quality_scale_compliance: tuple[float, float, float] = (0.90, 0.70, 0.60)  # Tier 1, 2, 3
    # augmentation
    augment_transpositions: tuple[int, ...] = (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)
    augment_tempo_factors: tuple[float, ...] = (0.90, 0.95, 1.05, 1.10)
    augment_octave_bounds: tuple[int, int] = (48, 96)
    augment_velocity_jitter: int = 10
    # splits and listening spot-checks
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    spot_check_per_tier: int = 20
    corpus_workers: int = 2
    # evaluation: the fixed prompt set, the configurations compared, the listening test, the gate
    evaluation_prompts: int = 20
    evaluation_bars: int = 16
    evaluation_bpm: float = 140.0
    evaluation_seed: int = 0
    # (configuration name, backend, JSON options)
    evaluation_configs: tuple[tuple[str, str, str], ...] = (
        ("rules", "rules", "{}"),
        ("rules-dense", "rules", '{"density": 0.75, "chord_tone_bias": 0.7}'),
    )
    reference_source: str = "test"  # "test": Tier 1 test split (kept out of training); "all": all of Tier 1
    listening_configs: tuple[str, str] = ("rules", "rules-dense")
    listening_pairs: int = 10
    gate_composite_ratio: float = 0.90
    gate_listening_win_rate: float = 0.70
    # success criteria (source melodies before augmentation; the plan's numbers in `full`)
    min_tier1_sources: int = 10
    min_tier2_sources: int = 6
    min_tier3_sources: int = 100

    def to_dict(self) -> dict:
        return asdict(self)

    def quality_thresholds(self, tier: int):
        from .music.quality import QualityThresholds

        return QualityThresholds(
            min_notes=self.quality_min_notes,
            min_range_octaves=self.quality_range_octaves[0],
            max_range_octaves=self.quality_range_octaves[1],
            min_bpm=self.quality_bpm_range[0],
            max_bpm=self.quality_bpm_range[1],
            max_polyphony=self.quality_max_polyphony,
            min_scale_compliance=self.quality_scale_compliance[tier - 1],
        )

    def augment_policy(self):
        from .corpus.augment import AugmentPolicy

        return AugmentPolicy(
            transpositions=self.augment_transpositions,
            tempo_factors=self.augment_tempo_factors,
            octave_bounds=self.augment_octave_bounds,
            velocity_jitter=self.augment_velocity_jitter,
        )


PROFILES: dict[str, Profile] = {
    "demo": Profile(name="demo"),
    "full": Profile(
        name="full",
        synthetic_count=500,
        synthetic_bars=(8, 16, 32),
        public_domain_count=2000,
        gigamidi_max_files=0,
        spot_check_per_tier=30,
        evaluation_prompts=100,
        listening_pairs=40,
        min_tier1_sources=50,
        min_tier2_sources=300,
        min_tier3_sources=500,
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return replace(base, **overrides) if overrides else base

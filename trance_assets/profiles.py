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
    # (configuration name, backend, JSON options). An option value "@models/<name>" is the folder of
    # that trained model asset; "@reference_pc" is the reference corpus's pitch-class histogram.
    evaluation_configs: tuple[tuple[str, str, str], ...] = (
        ("rules", "rules", "{}"),
        ("rules-dense", "rules", '{"density": 0.75, "chord_tone_bias": 0.7}'),
        ("melody_rnn", "melody_rnn", '{"checkpoint": "@models/melody_rnn_trance"}'),
        ("musicvae", "musicvae", '{"checkpoint": "@models/musicvae_trance"}'),
        ("phase1_pretrained", "hybrid", '{"melody_rnn": "@models/melody_rnn_base", "musicvae": "@models/musicvae_base", '
         '"reference_pc": "@reference_pc", "label": "phase1_pretrained"}'),
        ("phase2_finetuned", "hybrid", '{"melody_rnn": "@models/melody_rnn_trance", "musicvae": "@models/musicvae_trance", '
         '"reference_pc": "@reference_pc", "label": "phase2_finetuned"}'),
        ("midi_model", "midi_model", '{"model": "@models/midi_model_trance_lora", "backend": "onnx", "onnx_dir": "@models/midi_model_onnx_int8"}'),
    )
    reference_source: str = "test"  # "test": Tier 1 test split (kept out of training); "all": all of Tier 1
    listening_configs: tuple[str, str] = ("rules", "rules-dense")
    listening_pairs: int = 10
    gate_composite_ratio: float = 0.90
    gate_listening_win_rate: float = 0.70
    # models (issue 6): demo = small CPU sizes and a few hundred steps; full = the published sizes
    # and the plan's hyperparameters (a GPU). Stages: pre-train on Tier 3, fine-tune on Tier 2, a
    # final pass on Tier 1 (steps per stage; validation early stopping within each).
    melody_rnn_layers: tuple[int, ...] = (64, 64)
    melody_rnn_attn_length: int = 16
    melody_rnn_chord_conditioned: bool = True  # Improv RNN style: the chord one-hot on every step
    melody_rnn_batch_size: int = 16
    melody_rnn_lr: float = 1e-3
    melody_rnn_max_seq_len: int | None = 128  # demo: truncate examples (CPU time); full: None
    melody_rnn_steps: tuple[int, int, int] = (150, 60, 60)  # Tier 3, Tier 2, Tier 1
    musicvae_enc_sizes: tuple[int, ...] = (64,)
    musicvae_conductor_sizes: tuple[int, ...] = (64,)
    musicvae_dec_sizes: tuple[int, ...] = (64,)
    musicvae_z_size: int = 32
    musicvae_free_bits: float = 16.0  # nats; 256 for z = 512 in the published config
    musicvae_batch_size: int = 16
    musicvae_finetune_lr: float = 1e-4  # the plan's fine-tuning learning rate
    musicvae_steps: tuple[int, int, int] = (100, 60, 60)
    model_eval_every: int = 20
    model_patience: int = 4
    model_seed: int = 0
    model_device: str = "auto"  # "auto": CUDA when present
    # torch threads while training: 1 on the 2-core demo machine, where a second busy process turns
    # torch's spinning worker threads into a 10-30x slowdown (measured); None = torch's default
    model_threads: int | None = 1
    # midi-model (issue 7). demo: a small model pre-trained here on Tier 3 (CPU, minutes); full: the
    # published medium size (a hub checkpoint through MidiModelResource; a GPU). Then LoRA on Tier 2 and
    # a final pass on Tier 1 (the plan: r 16 on q/v, lr 2e-4; demo trains few steps, so a higher lr).
    midi_model_size: str = "small"  # models.midi_model.SIZES: tiny, small, medium, large
    midi_model_tokenizer: str = "v2"
    midi_model_steps: tuple[int, int, int] = (150, 60, 40)  # Tier 3 pre-training, Tier 2 LoRA, Tier 1 LoRA
    midi_model_batch_size: int = 8
    midi_model_max_events: int = 128  # training window (events); a 16-bar lead is about 130
    midi_model_max_val_sequences: int | None = 48  # validation subset per stage (CPU time); None: all
    midi_model_lr: float = 1e-3  # pre-training (all weights)
    midi_model_lora_lr: float = 1e-3
    midi_model_lora_r: int = 16
    midi_model_lora_alpha: int = 32
    midi_model_lora_dropout: float = 0.05
    midi_model_lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    midi_model_qlora: str = "auto"  # "auto": QLoRA when a CUDA GPU and bitsandbytes are present
    midi_model_onnx_opset: int = 17
    midi_model_agreement_sequences: int = 32  # held-out sequences for the INT8 top-1 agreement
    # the plan's success criteria for the models
    model_criteria_prompts: int = 24  # melodies per model for chord-tone / histogram / self-similarity
    model_min_chord_tone_gain: float = 0.10
    model_interpolation_steps: int = 10
    model_variation_noise: float = 0.2
    model_variation_min_compliance: float = 0.90
    model_min_reconstruction_accuracy: float = 0.50
    # success criteria (source melodies before augmentation; the plan's numbers in `full`)
    min_tier1_sources: int = 10
    min_tier2_sources: int = 6
    min_tier3_sources: int = 100

    def to_dict(self) -> dict:
        return asdict(self)

    def model_config(self, family: str) -> dict:
        """The model-config dict of a family at this profile's size (`MelodyRNNConfig` /
        `MusicVAEConfig` fields)."""
        if family == "melody_rnn":
            return {"layers": list(self.melody_rnn_layers), "attn_length": self.melody_rnn_attn_length,
                    "chord_dim": 25 if self.melody_rnn_chord_conditioned else 0}
        if family == "musicvae":
            return {"enc_sizes": list(self.musicvae_enc_sizes), "conductor_sizes": list(self.musicvae_conductor_sizes),
                    "dec_sizes": list(self.musicvae_dec_sizes), "z_size": self.musicvae_z_size,
                    "free_bits": self.musicvae_free_bits, "batch_size": self.musicvae_batch_size}
        raise ValueError(f"unknown model family {family!r}")

    def model_stages(self, family: str, kind: str) -> list:
        """`models.pipeline.Stage`s: kind "base" = pre-train on Tier 3; "trance" = fine-tune on
        Tier 2, then a final pass on Tier 1."""
        from .models.pipeline import Stage
        from .models.training import TrainConfig

        steps = self.melody_rnn_steps if family == "melody_rnn" else self.musicvae_steps
        rnn = family == "melody_rnn"

        def cfg(n: int) -> TrainConfig:
            return TrainConfig(
                max_steps=int(n), batch_size=self.melody_rnn_batch_size if rnn else self.musicvae_batch_size,
                eval_every=self.model_eval_every, patience=self.model_patience, seed=self.model_seed,
                device=self.model_device, threads=self.model_threads, lr=self.melody_rnn_lr, max_seq_len=self.melody_rnn_max_seq_len if rnn else None,
            )

        fine = () if rnn else (("learning_rate", self.musicvae_finetune_lr),)
        if kind == "base":
            return [Stage("pretrain_tier3", (3,), cfg(steps[0]))]
        if kind == "trance":
            return [Stage("finetune_tier2", (2,), cfg(steps[1]), fine), Stage("finetune_tier1", (1,), cfg(steps[2]), fine)]
        raise ValueError(f"kind must be 'base' or 'trance', got {kind!r}")

    def midi_model_stages(self, kind: str) -> list:
        """`models.pipeline.Stage`s of the midi-model: "base" = pre-train all weights on Tier 3;
        "trance" = LoRA on Tier 2, then a final LoRA pass on Tier 1 (the adapters carry over)."""
        from .models.pipeline import Stage
        from .models.training import TrainConfig

        def cfg(n: int, lr: float) -> TrainConfig:
            return TrainConfig(max_steps=int(n), batch_size=self.midi_model_batch_size, eval_every=self.model_eval_every,
                               patience=self.model_patience, seed=self.model_seed, device=self.model_device,
                               threads=self.model_threads, lr=lr, clip_norm=1.0, eval_batch_size=self.midi_model_batch_size)

        steps = self.midi_model_steps
        if kind == "base":
            return [Stage("pretrain_tier3", (3,), cfg(steps[0], self.midi_model_lr))]
        if kind == "trance":
            return [Stage("lora_tier2", (2,), cfg(steps[1], self.midi_model_lora_lr)), Stage("lora_tier1", (1,), cfg(steps[2], self.midi_model_lora_lr))]
        raise ValueError(f"kind must be 'base' or 'trance', got {kind!r}")

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
        melody_rnn_layers=(128, 128),
        melody_rnn_attn_length=40,
        melody_rnn_batch_size=64,
        melody_rnn_max_seq_len=None,
        melody_rnn_steps=(20_000, 10_000, 2_000),
        musicvae_enc_sizes=(2048, 2048),
        musicvae_conductor_sizes=(1024, 1024),
        musicvae_dec_sizes=(1024, 1024),
        musicvae_z_size=512,
        musicvae_free_bits=256.0,
        musicvae_batch_size=32,
        musicvae_steps=(50_000, 15_000, 2_000),
        model_eval_every=500,
        model_patience=5,
        model_criteria_prompts=50,
        model_threads=None,
        midi_model_size="medium",
        midi_model_steps=(20_000, 5_000, 1_000),
        midi_model_batch_size=4,
        midi_model_max_events=1024,
        midi_model_max_val_sequences=None,
        midi_model_lr=2e-4,
        midi_model_lora_lr=2e-4,
        midi_model_agreement_sequences=200,
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return replace(base, **overrides) if overrides else base


def parse_overrides(text: str) -> dict:
    """Profile overrides from a JSON object (lists become tuples). ValueError naming unknown fields
    or malformed JSON."""
    import json
    from dataclasses import fields

    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"profile overrides are not valid JSON ({e}): {text!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile overrides must be a JSON object, got {text!r}")
    known = {f.name for f in fields(Profile)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown profile field(s) {unknown} in the overrides; known: {sorted(known)}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return {k: tup(v) for k, v in data.items()}

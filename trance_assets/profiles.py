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

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "demo": Profile(name="demo"),
    "full": Profile(name="full", synthetic_count=500, synthetic_bars=(8, 16, 32)),
}


def get_profile(name: str, **overrides) -> Profile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return replace(base, **overrides) if overrides else base

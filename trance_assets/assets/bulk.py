"""Tier 3 bulk sources: GigaMIDI (hub or local parquet) and music21's public-domain corpus."""

import os
import time

import dagster as dg
from pydantic import Field

from ..bulk.gigamidi import LICENCE as GIGAMIDI_LICENCE
from ..bulk.gigamidi import GigaMidiConfig, gigamidi_melodies as read_gigamidi
from ..bulk.public_domain import COLLECTION_LICENCES, public_domain_melodies as read_public_domain
from ..constants import ENV_GIGAMIDI_CONFIG, ENV_GIGAMIDI_DIR, ENV_HF_TOKEN, TIER3
from ..metadata import md_image, md_table
from ..music.melody import MelodySet
from ..music.pianoroll import piano_roll_png
from ..music.summary import key_counts, melody_row
from ..resources import SettingsResource
from .automation import BULK_AUTOMATION

# Materialize once when missing (or when the code changes): the corpus then follows by itself.
class GigaMidiResource(dg.ConfigurableResource):
    """Where GigaMIDI comes from: a local folder of its parquet shards, or the Hugging Face hub
    (`Metacreation/GigaMIDI` is gated: accept its terms, then give a config name and a token)."""

    local_dir: str = Field(default="", description="Folder holding GigaMIDI parquet shards (searched recursively).")
    hf_repo: str = Field(default="Metacreation/GigaMIDI", description="Hugging Face dataset id.")
    hf_config: str = Field(default="", description="Dataset config (subfolder), e.g. 'v2.0.0'; empty: the hub is not used.")
    hf_split: str = Field(default="train", description="Split to read.")
    token: str = Field(default="", description="Hugging Face token with access to the gated dataset.")

    @classmethod
    def from_env(cls) -> "GigaMidiResource":
        return cls(
            local_dir=os.environ.get(ENV_GIGAMIDI_DIR, ""),
            hf_config=os.environ.get(ENV_GIGAMIDI_CONFIG, ""),
            token=os.environ.get(ENV_HF_TOKEN, ""),
        )

    def config(self, settings: SettingsResource) -> GigaMidiConfig:
        p = settings.get_profile()
        return GigaMidiConfig(
            local_dir=self.local_dir,
            hf_repo=self.hf_repo,
            hf_config=self.hf_config,
            hf_split=self.hf_split,
            token=self.token,
            styles=tuple(p.gigamidi_styles),
            min_bpm=p.gigamidi_bpm_range[0],
            max_bpm=p.gigamidi_bpm_range[1],
            max_files=p.gigamidi_max_files,
        )


def _summary_metadata(melodies: MelodySet, tier3) -> dict:
    rows = [melody_row(m, tier3) for m in melodies]
    return {
        "count": len(melodies),
        "passing_tier3_quality": sum(r["passes_quality"] for r in rows),
        "keys": dg.MetadataValue.json(key_counts(melodies)),
        "summary": md_table(rows, ["name", "key", "bpm", "bars", "notes", "range_semitones", "scale_compliance", "progression"]),
        "examples": md_image(piano_roll_png(melodies.melodies[:4]), "piano roll of the first melodies") if len(melodies) else "none",
    }


@dg.asset(key=["tier3", "gigamidi_melodies"], group_name=TIER3, code_version="gigamidi-1", kinds={"midi", "polars"}, automation_condition=BULK_AUTOMATION)
def gigamidi_melodies(context: dg.AssetExecutionContext, settings: SettingsResource, gigamidi: GigaMidiResource) -> dg.Output[MelodySet]:
    """Tier 3: lead melodies from GigaMIDI files tagged electronic/trance at 130-150 BPM (CC BY-NC 4.0).

    Offline with no source configured this materializes zero melodies and says so; it never fails.
    """
    config = gigamidi.config(settings)
    result = read_gigamidi(config, log=context.log.info)
    melodies = MelodySet(tuple(result.melodies))
    report = dict(result.report)
    rejections = report.pop("rejections", [])
    meta = {
        "source": config.describe(),
        "configured": config.configured,
        "status": report.get("message") or ("read" if config.configured else "no GigaMIDI source configured"),
        "licence": GIGAMIDI_LICENCE,
        "styles": ", ".join(config.styles),
        "bpm_range": f"{config.min_bpm:g}-{config.max_bpm:g}",
        "report": dg.MetadataValue.json({k: v for k, v in report.items() if isinstance(v, (int, float, str, bool, type(None), dict, list))}),
        "rejected_files": md_table(rejections[:50]) if rejections else "none",
    }
    if not config.configured:
        context.log.warning(
            "No GigaMIDI source configured: 0 melodies. Set TRANCE_GIGAMIDI_DIR to a folder of its parquet shards, "
            "or TRANCE_GIGAMIDI_CONFIG + HF_TOKEN for the gated hub dataset."
        )
    meta.update(_summary_metadata(melodies, settings.get_profile().quality_thresholds(3)))
    return dg.Output(melodies, metadata=meta)


@dg.asset(key=["tier3", "public_domain_melodies"], group_name=TIER3, code_version="public-domain-1", kinds={"midi", "music21"}, automation_condition=BULK_AUTOMATION)
def public_domain_melodies(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[MelodySet]:
    """Tier 3: monophonic public-domain tunes from music21's corpus (Essen, Ryan's Mammoth, O'Neill's),
    re-timed to the profile's trance tempo (their notated tempi are meaningless here)."""
    p = settings.get_profile()
    t0 = time.perf_counter()
    cache = settings.local_dataset_dir().parent / "cache" / "public_domain"
    result = read_public_domain(
        p.public_domain_count,
        bpm=p.public_domain_bpm,
        collections=tuple(p.public_domain_collections),
        cache_dir=cache,
        workers=p.corpus_workers,
        seed=p.synthetic_seed,
        log=context.log.info,
    )
    seconds = time.perf_counter() - t0
    melodies = MelodySet(tuple(result.melodies))
    report = dict(result.report)
    meta = {
        "count": len(melodies),
        "licences": md_table([{"collection": c, "licence": COLLECTION_LICENCES.get(c, "")} for c in p.public_domain_collections]),
        "retimed_to_bpm": p.public_domain_bpm,
        "collections": ", ".join(p.public_domain_collections),
        "seconds": round(seconds, 2),
        "tunes_per_second": report.get("tunes_per_second"),
        "cache": dg.MetadataValue.path(str(cache)),
        "report": dg.MetadataValue.json(report),
    }
    meta.update(_summary_metadata(melodies, p.quality_thresholds(3)))
    return dg.Output(melodies, metadata=meta)

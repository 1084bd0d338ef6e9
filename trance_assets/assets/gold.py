"""Tier 1: hand-verified gold MIDI from storage/dataset/tier1/ (one partition per file)."""

import hashlib

import dagster as dg
from pydantic import Field

from ..constants import TIER1
from ..gold_inbox import find_gold_file, read_manifest
from ..inbox import partition_key_for
from ..metadata import md_image
from ..music.gold import GOLD_VERSION, load_gold
from ..music.melody import Melody
from ..music.pianoroll import piano_roll_png
from ..music.quality import check_melody
from ..partitions import gold_melodies
from ..resources import SettingsResource

GOLD = dg.AssetKey(["tier1", "melody"])


class GoldConfig(dg.Config):
    lead_track: str = Field(
        default="",
        description="Track holding the lead in a multi-track file: an index ('2') or a track name ('Lead'). "
        "Empty: the manifest's lead_track column, else the lead-track heuristic.",
    )


@dg.asset(
    key=GOLD,
    partitions_def=gold_melodies,
    group_name=TIER1,
    code_version=f"gold-{GOLD_VERSION}",
    kinds={"midi"},
    check_specs=[
        dg.AssetCheckSpec(
            "tier1_rules",
            asset=GOLD,
            partitions_def=gold_melodies,
            description="Verified in the manifest and passes every Tier 1 quality rule (scale compliance >= 0.90).",
        )
    ],
)
def gold_melody(context: dg.AssetExecutionContext, config: GoldConfig, settings: SettingsResource):
    """A Tier 1 melody: the lead track of a gold MIDI file, with its manifest facts, validated.

    Files without a manifest entry (or with an empty verified_by) are materialized as *unverified*
    and are not used by the corpus; a melody under the Tier 1 rules is a recorded rejection.
    """
    pk = context.partition_key
    folder = settings.path("dataset", "tier1")
    local = settings.local_dataset_dir("tier1")
    rel = find_gold_file(local, pk)
    if rel is None:
        raise dg.Failure(f"no MIDI file in {folder} has partition key {pk} (was it renamed or removed?)")
    manifest = read_manifest(local)
    entry = manifest.get(rel)
    problem = manifest.problem_for(rel) or next((p for p in manifest.problems if p.file == ""), None)
    preference = config.lead_track.strip() or None
    if preference is not None and preference.isdigit():
        preference = int(preference)
    data = (folder / rel).read_bytes()
    result = load_gold(data, file=rel, entry=entry, lead_track=preference)
    for w in result.warnings:
        context.log.warning(f"{rel}: {w}")
    thresholds = settings.get_profile().quality_thresholds(1)
    report = check_melody(result.melody, thresholds)
    reference_partition = partition_key_for(entry.reference_track) if entry and entry.reference_track else ""
    attributes = {
        **result.melody.attributes,
        "source_path": str(folder / rel),
        "accepted": report.passed,
        "rejection": report.reason(),
        "quality": report.as_dict(),
        "reference_partition": reference_partition,
        "warnings": result.warnings,
        "manifest_problem": str(problem) if problem else "",
    }
    m = Melody(result.melody.notes, result.melody.bpm, result.melody.key, result.melody.chords, result.melody.bars, result.melody.program, pk, attributes)
    status = "verified" if result.verified else "UNVERIFIED (not used)"
    if result.verified and not report.passed:
        status = "rejected by the Tier 1 rules (not used)"
    yield dg.Output(
        m,
        data_version=dg.DataVersion(hashlib.sha256(data).hexdigest()[:16] + ":" + (entry.row_hash[:8] if entry else "none")),
        metadata={
            "status": status,
            "verified": result.verified,
            "verified_by": attributes.get("verified_by") or "none",
            "manifest_problem": str(problem) if problem else "none",
            "accepted": report.passed,
            "rejection": report.reason() or "none",
            "file": dg.MetadataValue.path(str(folder / rel)),
            "title": attributes.get("title") or "",
            "licence": attributes.get("licence") or "none given",
            "key": m.key,
            "key_source": attributes.get("key_source", ""),
            "bpm": m.bpm,
            "bpm_source": attributes.get("bpm_source", ""),
            "notes": len(m.notes),
            "lead_track": f"{result.track.index} {result.track.name!r}: {result.track_reason}",
            "reference_track": attributes.get("reference_track") or "none",
            "warnings": "\n".join(result.warnings) or "none",
            "scale_compliance": report.as_dict().get("scale_compliance"),
            "piano_roll": md_image(piano_roll_png([m]), "piano roll"),
        },
    )
    yield dg.AssetCheckResult(
        check_name="tier1_rules",
        passed=result.verified and report.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"verified": result.verified, "rejection": report.reason() or "none", **{k: v if v is not None else "n/a" for k, v in report.as_dict().items()}},
    )

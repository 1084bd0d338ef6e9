"""Tier 2: reference audio → separated lead → transcription → validated lead melody → review queue."""

import hashlib
import json
import time

import dagster as dg
import polars as pl

from ..audio.extraction import EXTRACTION_VERSION, melody_from_events, sidecar
from ..audio.separation import read_audio, separate
from ..audio.transcription import to_mono_22k, transcribe, transcriber_version
from ..audio.types import AudioFile, Stems
from ..constants import POOL_HEAVY, TIER2
from ..formats.dataset import export_melody, read_sidecar
from ..io_managers import load_partition_values
from ..metadata import md_image, md_table
from ..music.melody import Melody
from ..music.pianoroll import piano_roll_png
from ..music.quality import QualityThresholds
from ..partitions import reference_tracks
from ..resources import SeparatorResource, SettingsResource, TranscriberResource
from ..review import (
    MAX_FLAGGED_SHARE,
    Track,
    batch_statuses,
    corpus_eligible,
    parse_reviews,
    reviews_template,
    select_for_review,
    write_review_material,
)
from ..storage import atomic_write_text
from .automation import AFTER_ITS_ASSET, REVIEW_AUTOMATION

SEPARATED_LEAD = dg.AssetKey(["tier2", "separated_lead"])
MELODY = dg.AssetKey(["tier2", "melody"])


@dg.asset(key=SEPARATED_LEAD, partitions_def=reference_tracks, group_name=TIER2, pool=POOL_HEAVY, code_version="1", kinds={"audio", "pytorch"})
def separated_lead(context: dg.AssetExecutionContext, reference_audio: AudioFile, separator: SeparatorResource) -> dg.Output[Stems]:
    """The lead synth isolated from the mix (Demucs 'other' stem, or the DSP fallback), plus the residual."""
    audio, sr = read_audio(reference_audio.path)
    sep = separate(audio, sr, separator.config())
    if sep.fallback_reason:
        context.log.warning(f"Demucs unavailable, DSP fallback used: {sep.fallback_reason}")
    duration = len(audio) / sr
    info = {
        "separator": sep.separator,
        "separator_version": sep.separator_version,
        "fallback_reason": sep.fallback_reason,
        "sources": list(sep.sources),
        "seconds": round(sep.seconds, 3),
        "source_file": reference_audio.info.get("source_file"),
        "content_hash": reference_audio.info.get("content_hash"),
    }
    lead = sep.lead if sep.lead.ndim == 2 else sep.lead[:, None]
    residual = sep.residual if sep.residual.ndim == 2 else sep.residual[:, None]
    return dg.Output(
        Stems(lead, residual, sep.sample_rate, info),
        data_version=dg.DataVersion(f"{reference_audio.info.get('content_id', '')}:{sep.separator}"),
        metadata={
            "separator": sep.separator,
            "separator_version": sep.separator_version,
            "fallback": sep.fallback_reason or "none (Demucs)",
            "seconds": round(sep.seconds, 3),
            "real_time_factor": round(sep.seconds / duration, 3) if duration else None,
            "sample_rate": sep.sample_rate,
            "source_file": dg.MetadataValue.path(str(reference_audio.info.get("source_file", reference_audio.path))),
        },
    )


@dg.asset(key=["tier2", "transcription"], partitions_def=reference_tracks, group_name=TIER2, code_version="1", kinds={"onnx"})
def transcription(context: dg.AssetExecutionContext, separated_lead: Stems, transcriber: TranscriberResource) -> dg.Output[pl.DataFrame]:
    """Basic Pitch note events of the separated lead (onset, offset, pitch, amplitude, pitch bends)."""
    t0 = time.perf_counter()
    events = transcribe(separated_lead.lead, separated_lead.sample_rate, transcriber.config())
    seconds = time.perf_counter() - t0
    pitches = events["pitch"]
    return dg.Output(
        events,
        metadata={
            "events": len(events),
            "pitch_range": f"{pitches.min()}-{pitches.max()}" if len(events) else "none",
            "transcriber": transcriber_version(),
            "config": dg.MetadataValue.json(transcriber.config().to_dict()),
            "seconds": round(seconds, 3),
            "preview": md_table(events.head(12).drop("pitch_bends", "reonsets_s").to_dicts()),
        },
    )


@dg.asset(
    key=MELODY,
    partitions_def=reference_tracks,
    group_name=TIER2,
    code_version=f"extraction-{EXTRACTION_VERSION}",
    kinds={"midi"},
    # Checks per track (partitioned checks: preview in Dagster 1.13), so one track's result never
    # hides another's.
    check_specs=[
        dg.AssetCheckSpec(name, asset=MELODY, description=text, partitions_def=reference_tracks)
        for name, text in (
            ("non_empty", "The extracted melody has at least the minimum number of notes."),
            ("tempo_in_range", "Tempo within 120-160 BPM."),
            ("scale_compliance", "Share of in-key notes at or above the Tier 2 threshold (0.70)."),
            ("tier2_rules", "Every Tier 2 quality rule (notes, range, tempo, polyphony, scale compliance): accepted into the corpus."),
        )
    ],
)
def melody(
    context: dg.AssetExecutionContext,
    settings: SettingsResource,
    transcription: pl.DataFrame,
    separated_lead: Stems,
    reference_audio: AudioFile,
):
    """The lead melody: best-path monophonic line, tempo and 16th grid, key, bar chords, validated.

    A melody under the Tier 2 quality rules is a recorded rejection (metadata, sidecar, checks), not a failure.
    """
    pk = context.partition_key
    info = reference_audio.info
    mix, sr = read_audio(reference_audio.path, mono=True)
    thresholds = QualityThresholds.for_tier(2)
    ex = melody_from_events(
        transcription,
        to_mono_22k(mix, sr),
        to_mono_22k(separated_lead.residual, separated_lead.sample_rate),
        name=pk,
        declared_bpm=info.get("bpm"),
        thresholds=thresholds,
    )
    dataset = settings.path("dataset", "tier2")
    folder = dataset if ex.accepted else dataset / "rejected"
    side = sidecar(
        ex,
        source_track=str(info.get("source_file", reference_audio.path)),
        source_sha256=str(info.get("content_hash", "")),
        separator=separated_lead.info.get("separator", "?"),
        separator_version=separated_lead.info.get("separator_version", "?"),
        partition_key=pk,
        separator_fallback_reason=separated_lead.info.get("fallback_reason"),
    )
    earlier = read_sidecar(dataset, pk) or read_sidecar(dataset / "rejected", pk)
    if earlier and earlier.get("source_sha256") == side["source_sha256"]:
        side["date_added"] = earlier["date_added"]  # keeps the track in the batch it was first extracted in
    for other in (dataset, dataset / "rejected"):  # a track moves between accepted and rejected, never duplicated
        if other != folder:
            for suffix in (".mid", ".json"):
                if (other / f"{pk}{suffix}").exists():
                    (other / f"{pk}{suffix}").unlink()
    mid_path, json_path = export_melody(folder, pk, ex.melody, side)
    m = Melody(ex.melody.notes, ex.melody.bpm, ex.melody.key, ex.melody.chords, ex.melody.bars, name=pk, attributes=side)
    q = ex.quality.as_dict()
    yield dg.Output(
        m,
        metadata={
            "accepted": ex.accepted,
            "rejection": ex.rejection or "none",
            "notes": len(m.notes),
            "key": m.key,
            "bpm": m.bpm,
            "bpm_source": ex.tempo.source,
            "bpm_confidence": ex.tempo.confidence,
            "scale_compliance": q.get("scale_compliance"),
            "candidates": ex.candidates,
            "chords": " ".join(c.symbol for c in m.chords[:8]) + (" ..." if len(m.chords) > 8 else ""),
            "separator": side["extraction_method"]["separator"],
            "batch": side["date_added"],
            "midi": dg.MetadataValue.path(str(mid_path)),
            "sidecar": dg.MetadataValue.path(str(json_path)),
            "source_file": dg.MetadataValue.path(side["source_track"]),
            "piano_roll": md_image(piano_roll_png([m]), "piano roll") if m.notes else "no notes",
        },
    )
    yield dg.AssetCheckResult(
        check_name="non_empty",
        passed=len(m.notes) >= thresholds.min_notes,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"notes": len(m.notes), "minimum": thresholds.min_notes},
    )
    yield dg.AssetCheckResult(
        check_name="tempo_in_range",
        passed=thresholds.min_bpm <= m.bpm <= thresholds.max_bpm,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"bpm": m.bpm, "range": f"{thresholds.min_bpm:g}-{thresholds.max_bpm:g}"},
    )
    yield dg.AssetCheckResult(
        check_name="tier2_rules",
        passed=ex.accepted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejection": ex.rejection or "none", **{k: v if v is not None else "n/a" for k, v in q.items()}},
    )
    comp = q.get("scale_compliance")
    yield dg.AssetCheckResult(
        check_name="scale_compliance",
        passed=comp is not None and comp >= thresholds.min_scale_compliance,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"scale_compliance": comp if comp is not None else "n/a", "threshold": thresholds.min_scale_compliance},
    )


@dg.asset(
    key=["tier2", "review_queue"],
    group_name=TIER2,
    deps=[MELODY],
    code_version="1",
    kinds={"csv"},
    automation_condition=REVIEW_AUTOMATION,
)
def review_queue(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[pl.DataFrame]:
    """Listening spot-checks: every 5th accepted track per batch, with reviewer material; batch verdicts."""
    melodies = load_partition_values(settings.storage_root, MELODY.path)
    stems_root = SEPARATED_LEAD.path
    tracks = [Track(pk, m.attributes.get("date_added", "unknown"), bool(m.attributes.get("accepted"))) for pk, m in sorted(melodies.items())]
    queued = select_for_review(tracks)
    reviews_dir = settings.path("reviews")
    reviews_file = reviews_dir / "reviews.csv"
    if not reviews_file.exists():
        atomic_write_text(reviews_file, reviews_template())
    reviews = parse_reviews(reviews_file.read_text(), str(reviews_file))
    statuses = batch_statuses(tracks, queued, reviews)
    rows, gallery = [], []
    for t in tracks:
        m = melodies[t.partition_key]
        material = ""
        if t.partition_key in queued:
            folder = reviews_dir / t.batch / t.partition_key
            # (Re)written when missing or when the track's melody changed since (a re-extraction).
            stamp = hashlib.sha256(m.to_json().encode()).hexdigest()[:16]
            made_for = (folder / "material.json").read_text() if (folder / "material.json").exists() else ""
            if stamp not in made_for:
                stems = load_partition_values(settings.storage_root, stems_root, keys=[t.partition_key]).get(t.partition_key)
                if stems is not None:
                    write_review_material(folder, stems.lead.mean(axis=1), stems.sample_rate, m, m.attributes.get("grid_origin_s", 0.0))
                    atomic_write_text(folder / "material.json", json.dumps({"melody_sha256": stamp, "partition_key": t.partition_key}))
            material = str(folder) if (folder / "pianoroll.png").exists() else "not available (no separated stems stored)"
            if len(gallery) < 6 and (folder / "pianoroll.png").exists():
                gallery.append(md_image((folder / "pianoroll.png").read_bytes(), t.partition_key).value)
        r = reviews.get(t.partition_key)
        rows.append(
            {
                "partition_key": t.partition_key,
                "batch": t.batch,
                "accepted": t.accepted,
                "queued": t.partition_key in queued,
                "verdict": r.verdict if r else ("awaiting review" if t.partition_key in queued else ""),
                "batch_status": statuses[t.batch].status,
                "corpus_eligible": corpus_eligible(t, statuses),
                "review_material": material,
            }
        )
    table = pl.DataFrame(rows, schema={"partition_key": pl.String, "batch": pl.String, "accepted": pl.Boolean, "queued": pl.Boolean, "verdict": pl.String, "batch_status": pl.String, "corpus_eligible": pl.Boolean, "review_material": pl.String})
    batch_rows = [
        {"batch": b.batch, "tracks": b.tracks, "accepted": b.accepted, "queued": b.queued, "reviewed": b.reviewed, "flagged": b.flagged, "status": b.status}
        for b in statuses.values()
    ]
    return dg.Output(
        table,
        metadata={
            "tracks": len(tracks),
            "queued": len(queued),
            "awaiting_review": sum(1 for r in rows if r["verdict"] == "awaiting review"),
            "rejected_batches": sum(1 for b in statuses.values() if b.status == "rejected"),
            "reviews_file": dg.MetadataValue.path(str(reviews_file)),
            "how_to_review": "Listen to lead_isolated.wav and melody_resynth.wav in each queued track's folder, look at pianoroll.png, "
            "then add a row 'partition_key,pass|flag,reviewer,YYYY-MM-DD,note' to the reviews file and re-materialize this asset.",
            "batches": md_table(batch_rows),
            "queue": md_table(
                [
                    {**r, "isolated_lead": f"{r['review_material']}/lead_isolated.wav", "resynthesised": f"{r['review_material']}/melody_resynth.wav"}
                    if r["review_material"].startswith(str(reviews_dir))
                    else {**r, "isolated_lead": r["review_material"], "resynthesised": ""}
                    for r in rows
                    if r["queued"]
                ],
                ["partition_key", "batch", "verdict", "isolated_lead", "resynthesised"],
            ),
            "piano_rolls": dg.MetadataValue.md("\n\n".join(gallery) or "_none queued_"),
        },
    )


@dg.asset_check(automation_condition=AFTER_ITS_ASSET, asset=review_queue, description=f"No batch has more than {MAX_FLAGGED_SHARE:.0%} of its reviewed tracks flagged.")
def review_batches_pass(review_queue: pl.DataFrame) -> dg.AssetCheckResult:
    rejected = sorted(set(review_queue.filter(pl.col("batch_status") == "rejected")["batch"].to_list()))
    excluded = review_queue.filter(pl.col("batch_status") == "rejected").height
    return dg.AssetCheckResult(
        passed=not rejected,
        metadata={"rejected_batches": ", ".join(rejected) or "none", "melodies_kept_out_of_corpus": excluded},
    )

"""Ingest: reference audio from the inbox, one partition per file."""


import time
from dataclasses import replace

import dagster as dg

from ..audio.ingest import stage_reference_audio
from ..audio.io import AudioValidationError
from ..audio.types import AudioFile
from ..constants import INGEST
from ..inbox import find_inbox_file
from ..partitions import reference_tracks
from ..resources import SettingsResource


@dg.asset(
    partitions_def=reference_tracks,
    group_name=INGEST,
    code_version="1",
    kinds={"audio"},
)
def reference_audio(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[AudioFile]:
    """A reference track from the inbox, validated and copied into managed storage."""
    profile = settings.get_profile()
    t0 = time.perf_counter()
    src = find_inbox_file(settings.inbox_path, context.partition_key)
    if src is None:
        raise dg.Failure(
            description=f"no file in {settings.inbox_path} maps to partition {context.partition_key!r} "
            "(removed from the inbox? its earlier materializations and stored audio are kept)",
        )
    try:
        ref = stage_reference_audio(src, max_seconds=profile.max_audio_seconds, silence_dbfs=profile.silence_dbfs)
    except AudioValidationError as err:
        raise dg.Failure(
            description=str(err),
            metadata={"file": dg.MetadataValue.path(err.path), "cause": err.cause},
        ) from None
    info = ref.info
    provenance = {
        "source_file": ref.source,
        "content_hash": info.sha256,
        "content_id": ref.content_id,
        "duration_s": info.duration_s,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "bpm": ref.bpm,
        "bpm_source": ref.bpm_source,
        "loudness_lufs": info.lufs,
    }
    return dg.Output(
        replace(ref.staged, info=provenance),
        data_version=dg.DataVersion(ref.content_id),
        metadata={
            "source_file": dg.MetadataValue.path(ref.source),
            "content_hash": info.sha256,
            "content_id": ref.content_id,
            "duration_s": round(info.duration_s, 3),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "format": f"{info.format}/{info.subtype}",
            "size_bytes": info.size_bytes,
            "loudness_lufs": info.lufs if info.lufs is not None else "unmeasurable (too short or too quiet)",
            "peak_dbfs": info.peak_dbfs,
            "rms_dbfs": info.rms_dbfs,
            "bpm": ref.bpm if ref.bpm is not None else "unknown",
            "bpm_source": ref.bpm_source,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )

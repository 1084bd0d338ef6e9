"""The reference_audio asset on a real instance: validated copy into storage, metadata, data
version, and per-partition failures that name the file and leave the inbox alone."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg

from trance_assets.assets.ingest import reference_audio
from trance_assets.audio.io import inspect_audio
from trance_assets.inbox import content_id, partition_key_for


def materialize(instance, resources, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([reference_audio], partition_key=key, instance=instance, resources=resources, raise_on_error=False)


def inbox_snapshot(inbox: Path) -> dict[str, str]:
    return {p.relative_to(inbox).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(inbox.rglob("*")) if p.is_file()}


def failure_of(result: dg.ExecuteInProcessResult) -> dg.Failure:
    failures = [ev for ev in result.all_events if ev.is_step_failure]
    assert len(failures) == 1
    return failures[0].step_failure_data.user_failure_data


def test_good_file_materializes_into_storage(instance, settings, inbox, resources, write_wav):
    src = write_wav(inbox / "Dawn Chorus.wav", seconds=3.0, sr=48000, channels=2, subtype="PCM_24")
    key = partition_key_for("Dawn Chorus.wav")
    instance.add_dynamic_partitions("reference_tracks", [key])
    result = materialize(instance, resources, key)
    assert result.success

    stored = Path(settings.storage_url) / "assets" / "reference_audio" / f"{key}.wav"
    assert stored.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in stored.parent.iterdir()) == [f"{key}.wav", f"{key}.wav.json"]
    # The provenance stored beside the audio travels with it to the Tier 2 stages.
    stored_info = json.loads((stored.parent / f"{key}.wav.json").read_text())
    assert stored_info["source_file"] == str(src)
    assert stored_info["content_hash"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert stored_info["bpm"] is None and stored_info["bpm_source"] == "unknown"

    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    cid = digest[:16]
    info = inspect_audio(src)
    [mat] = result.asset_materializations_for_node("reference_audio")
    assert mat.partition == key
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["content_hash"] == digest
    assert meta["content_id"] == cid
    assert meta["duration_s"] == 3.0
    assert meta["sample_rate"] == 48000
    assert meta["channels"] == 2
    assert meta["format"] == "WAV/PCM_24"
    assert meta["size_bytes"] == len(src.read_bytes())
    assert isinstance(meta["loudness_lufs"], float) and meta["loudness_lufs"] == info.lufs
    assert meta["peak_dbfs"] == info.peak_dbfs
    assert (meta["bpm"], meta["bpm_source"]) == ("unknown", "unknown")
    assert meta["source_file"] == str(src)
    assert meta["storage_path"] == str(stored)
    # The data version is the content id the sensor compares against.
    assert mat.tags["dagster/data_version"] == cid
    record = instance.get_latest_materialization_event(reference_audio.key)
    assert record.asset_materialization.tags["dagster/data_version"] == cid


def test_sidecar_bpm_and_content_id(instance, settings, inbox, resources, write_wav):
    src = write_wav(inbox / "sets" / "Peak.flac", seconds=1.0, format="FLAC")
    side = inbox / "sets" / "Peak.json"
    side.write_text(json.dumps({"bpm": 138}))
    key = partition_key_for("sets/Peak.flac")
    instance.add_dynamic_partitions("reference_tracks", [key])
    result = materialize(instance, resources, key)
    assert result.success
    [mat] = result.asset_materializations_for_node("reference_audio")
    cid = content_id(hashlib.sha256(src.read_bytes()).hexdigest(), hashlib.sha256(side.read_bytes()).hexdigest())
    assert mat.metadata["content_id"].value == cid
    assert mat.tags["dagster/data_version"] == cid
    assert (mat.metadata["bpm"].value, mat.metadata["bpm_source"].value) == (138.0, "sidecar")
    stored = Path(settings.storage_url) / "assets" / "reference_audio" / f"{key}.flac"
    assert stored.read_bytes() == src.read_bytes()


def test_corrupt_file_fails_its_partition_only_and_nothing_is_deleted(
    instance, settings, inbox, resources, write_wav, tmp_path, monkeypatch
):
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    good = write_wav(inbox / "good.wav", seconds=1.0)
    bad = inbox / "broken.wav"
    data = write_wav(inbox / "tmp.wav", seconds=2.0).read_bytes()
    (inbox / "tmp.wav").unlink()
    bad.write_bytes(data[: len(data) // 2])  # header declares the full length
    silent = inbox / "quiet.wav"
    silent.write_bytes(b"")
    kg, kb, ke = partition_key_for("good.wav"), partition_key_for("broken.wav"), partition_key_for("quiet.wav")
    instance.add_dynamic_partitions("reference_tracks", [kg, kb, ke])
    before = inbox_snapshot(inbox)

    failed = materialize(instance, resources, kb)
    assert not failed.success
    failure = failure_of(failed)
    declared, available = 2 * 44100 * 2 * 2, len(data) // 2 - 44
    assert failure.description == f"{bad}: truncated: header declares {declared} bytes of audio, file holds {available}"
    assert failure.metadata["file"] == dg.MetadataValue.path(str(bad))
    assert failure.metadata["cause"] == dg.MetadataValue.text(
        f"truncated: header declares {declared} bytes of audio, file holds {available}"
    )

    empty = materialize(instance, resources, ke)
    assert not empty.success
    assert failure_of(empty).description == f"{silent}: zero-length file (0 bytes)"

    ok = materialize(instance, resources, kg)
    assert ok.success
    stored_dir = Path(settings.storage_url) / "assets" / "reference_audio"
    assert sorted(p.name for p in stored_dir.iterdir()) == [f"{kg}.wav", f"{kg}.wav.json"]
    assert (stored_dir / f"{kg}.wav").read_bytes() == good.read_bytes()
    assert inbox_snapshot(inbox) == before
    assert list(staging.iterdir()) == []  # staging copies are removed, failed or not
    # Only the good partition has a materialization.
    assert instance.get_materialized_partitions(reference_audio.key) == {kg}


def test_unreadable_file_names_the_inbox_file_not_the_staging_copy(instance, inbox, resources):
    bad = inbox / "notes.wav"
    bad.write_text("not audio at all, just text that happens to end in .wav\n" * 10)
    key = partition_key_for("notes.wav")
    instance.add_dynamic_partitions("reference_tracks", [key])
    result = materialize(instance, resources, key)
    assert not result.success
    description = failure_of(result).description
    assert description.startswith(f"{bad}: not a readable audio file (")
    assert "trance-stage-" not in description
    assert bad.exists()


def test_too_long_for_the_profile(instance, inbox, resources, write_wav, monkeypatch):
    from trance_assets.profiles import PROFILES, get_profile

    monkeypatch.setitem(PROFILES, "demo", get_profile("demo", max_audio_seconds=1.0))
    src = write_wav(inbox / "long.wav", seconds=2.0)
    key = partition_key_for("long.wav")
    instance.add_dynamic_partitions("reference_tracks", [key])
    result = materialize(instance, resources, key)
    assert failure_of(result).description == f"{src}: too long: 2.0 s exceeds the limit of 1.0 s"


def test_partition_whose_file_is_gone(instance, settings, resources):
    key = partition_key_for("removed.wav")
    instance.add_dynamic_partitions("reference_tracks", [key])
    result = materialize(instance, resources, key)
    assert not result.success
    description = failure_of(result).description
    assert description.startswith(f"no file in {Path(settings.inbox_dir).resolve()} maps to partition {key!r}")

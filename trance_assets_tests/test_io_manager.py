"""StorageIOManager round trips through real materializations, on disk and on fsspec memory://;
atomic writes that never leave half-written files or temporary siblings behind."""

import hashlib
import json
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from upath import UPath

from trance_assets import storage
from trance_assets.audio.types import AudioFile
from trance_assets.io_managers import StorageIOManager
from trance_assets.music.melody import Melody, MelodySet, Note
from trance_assets.music.rules import generate
from trance_assets.resources import SettingsResource
from trance_assets.storage import TMP_MARK, as_upath, atomic_copy_file, atomic_write_bytes, atomic_write_dir

MELODY = generate(key="Am", bpm=138, chord_progression=["Am", "F", "C", "G"], bars=4, seed=3)
OTHER = Melody(notes=(Note(0.0, 69, 1.0, 90), Note(1.0, 72, 0.5)), bpm=140.0, key="C", bars=1, name="other")
MELODY_SET = MelodySet((MELODY, OTHER))
FRAME = pl.DataFrame({"name": ["a", "b", "c"], "bpm": [138.0, 140.5, 132.0], "bars": [8, 16, 32]})
DATA = {"tracks": 3, "keys": ["Am", "C"], "nested": {"ok": True, "ratio": 0.25}}


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if TMP_MARK in p.name or ".old-" in p.name)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for ev in result.all_events:
        if ev.is_step_failure:
            err = ev.step_failure_data.error
            while err is not None:
                parts.append(f"{err.cls_name}: {err.message}")
                err = err.cause
    return "\n".join(parts)


def make_staged_wav(write_wav) -> AudioFile:
    folder = Path(tempfile.mkdtemp(prefix="trance-stage-test-"))
    write_wav(folder / "audio.wav", seconds=0.5, channels=1)
    return AudioFile(str(folder / "audio.wav"), temporary=True)


# ---- on a local folder, through dg.materialize --------------------------------------------------


def test_round_trip_of_every_payload_through_materialize(settings, resources, instance, write_wav):
    staged = make_staged_wav(write_wav)
    staged_bytes = Path(staged.path).read_bytes()
    received: dict = {}

    @dg.asset(key_prefix=["io_test"])
    def melody() -> Melody:
        return MELODY

    @dg.asset(key_prefix=["io_test"])
    def melodies() -> MelodySet:
        return MELODY_SET

    @dg.asset(key_prefix=["io_test"])
    def audio() -> AudioFile:
        return staged

    @dg.asset(key_prefix=["io_test"])
    def frame() -> pl.DataFrame:
        return FRAME

    @dg.asset(key_prefix=["io_test"])
    def data() -> dict:
        return DATA

    @dg.asset(key_prefix=["io_test"])
    def nothing() -> None:
        return None

    @dg.asset(
        key_prefix=["io_test"],
        ins={n: dg.AssetIn(key=["io_test", n]) for n in ("melody", "melodies", "audio", "frame", "data")},
    )
    def consumer(melody, melodies, audio, frame, data) -> list:
        received.update(melody=melody, melodies=melodies, audio=audio, frame=frame, data=data)
        return [len(melodies), frame.height]

    result = dg.materialize(
        [melody, melodies, audio, frame, data, nothing, consumer], instance=instance, resources=resources
    )
    assert result.success
    base = Path(settings.storage_url) / "assets" / "io_test"

    # What is on disk, exactly.
    assert tree(base) == [
        "audio.wav",
        "consumer.json",
        "data.json",
        "frame.parquet",
        "melodies.melodies/index.parquet",
        "melodies.melodies/other.json",
        "melodies.melodies/other.mid",
        f"melodies.melodies/{MELODY.name}.json",
        f"melodies.melodies/{MELODY.name}.mid",
        "melody.melody.json",
        "melody.mid",
    ]
    assert leftovers(base) == []
    assert (base / "melody.mid").read_bytes() == MELODY.to_midi_bytes()
    assert json.loads((base / "consumer.json").read_text()) == [2, 3]

    # What the consumer loaded equals what was stored.
    assert received["melody"] == MELODY
    assert received["melody"].attributes == MELODY.attributes
    assert received["melodies"] == MELODY_SET
    assert received["frame"].equals(FRAME)
    assert received["data"] == DATA
    audio_in = received["audio"]
    assert audio_in == AudioFile(str(base / "audio.wav"), ".wav", temporary=False)
    assert Path(audio_in.path).read_bytes() == staged_bytes

    # The temporary staging copy (and its folder) are gone; the stored copy is not temporary.
    assert not Path(staged.path).exists() and not Path(staged.path).parent.exists()

    # storage_path metadata names the written object.
    meta = result.asset_materializations_for_node("io_test__data")[0].metadata
    assert meta["storage_path"] == dg.MetadataValue.path(str(base / "data.json"))
    meta = result.asset_materializations_for_node("io_test__melodies")[0].metadata
    assert meta["storage_path"] == dg.MetadataValue.path(str(base / "melodies.melodies"))


def test_non_temporary_audio_file_is_copied_and_left_in_place(settings, resources, instance, write_wav, tmp_path):
    src = write_wav(tmp_path / "keep" / "Song.FLAC", seconds=0.5, format="FLAC")

    @dg.asset
    def kept() -> AudioFile:
        return AudioFile(str(src))

    assert dg.materialize([kept], instance=instance, resources=resources).success
    stored = Path(settings.storage_url) / "assets" / "kept.flac"
    assert stored.read_bytes() == src.read_bytes()
    assert src.exists()


def test_partitioned_upstream_and_unpartitioned_downstream(settings, resources, instance):
    parts = dg.StaticPartitionsDefinition(["p1", "p2", "p3"])
    seen: dict = {}

    @dg.asset(partitions_def=parts)
    def per_part(context: dg.AssetExecutionContext) -> pl.DataFrame:
        k = context.partition_key
        return pl.DataFrame({"part": [k], "n": [int(k[1])]})

    @dg.asset(partitions_def=parts)
    def per_part_doubled(context: dg.AssetExecutionContext, per_part: pl.DataFrame) -> dict:
        seen[context.partition_key] = per_part
        return {"part": per_part["part"][0], "n2": 2 * per_part["n"][0]}

    @dg.asset
    def gathered(per_part_doubled: dict) -> dict:
        seen["all"] = per_part_doubled
        return {"total": sum(v["n2"] for v in per_part_doubled.values()), "parts": sorted(per_part_doubled)}

    for key in ("p1", "p2", "p3"):
        r = dg.materialize([per_part, per_part_doubled], partition_key=key, instance=instance, resources=resources)
        assert r.success
    r = dg.materialize([per_part, per_part_doubled, gathered], selection=[gathered], instance=instance, resources=resources)
    assert r.success

    base = Path(settings.storage_url) / "assets"
    assert tree(base) == [
        "gathered.json",
        "per_part/p1.parquet",
        "per_part/p2.parquet",
        "per_part/p3.parquet",
        "per_part_doubled/p1.json",
        "per_part_doubled/p2.json",
        "per_part_doubled/p3.json",
    ]
    # Partition to partition: a single value, not a dict.
    assert seen["p2"].equals(pl.DataFrame({"part": ["p2"], "n": [2]}))
    # Unpartitioned downstream: {partition_key: value} for every partition.
    assert seen["all"] == {"p1": {"part": "p1", "n2": 2}, "p2": {"part": "p2", "n2": 4}, "p3": {"part": "p3", "n2": 6}}
    assert json.loads((base / "gathered.json").read_text()) == {"total": 12, "parts": ["p1", "p2", "p3"]}


def test_dynamic_partitions_are_stored_per_key(settings, resources, instance):
    dyn = dg.DynamicPartitionsDefinition(name="io_test_tracks")

    @dg.asset(partitions_def=dyn)
    def per_track(context: dg.AssetExecutionContext) -> dict:
        return {"key": context.partition_key}

    instance.add_dynamic_partitions("io_test_tracks", ["my-track-0123456789"])
    assert dg.materialize([per_track], partition_key="my-track-0123456789", instance=instance, resources=resources).success
    stored = Path(settings.storage_url) / "assets" / "per_track" / "my-track-0123456789.json"
    assert json.loads(stored.read_text()) == {"key": "my-track-0123456789"}


def test_unsupported_payload_is_a_type_error(settings, resources, instance):
    @dg.asset
    def a_set() -> object:
        return {1, 2, 3}

    result = dg.materialize([a_set], instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "TypeError: StorageIOManager cannot store a set" in text
    assert not (Path(settings.storage_url) / "assets").exists() or tree(Path(settings.storage_url) / "assets") == []
    io = StorageIOManager(settings=settings)
    with pytest.raises(TypeError, match="cannot store a bytes"):
        io._write(as_upath(settings.storage_url) / "x", b"raw")


def test_loading_a_missing_value_names_the_stem(settings):
    io = StorageIOManager(settings=settings)
    stem = as_upath(settings.storage_url) / "assets" / "never"
    with pytest.raises(FileNotFoundError, match=r"no stored value at .*never\.\*"):
        io._read(stem)


# ---- fsspec memory:// --------------------------------------------------------------------------


@pytest.fixture
def memory_settings():
    bucket = f"trance-test-{uuid.uuid4().hex[:8]}"
    s = SettingsResource(storage_url=f"memory://{bucket}/store", inbox_dir="/nonexistent-inbox")
    yield s
    fs = s.storage_root.fs
    if fs.exists(f"/{bucket}"):
        fs.rm(f"/{bucket}", recursive=True)


def test_memory_storage_round_trip(memory_settings, instance, write_wav):
    s = memory_settings
    staged = make_staged_wav(write_wav)
    staged_bytes = Path(staged.path).read_bytes()
    received: dict = {}

    @dg.asset
    def frame() -> pl.DataFrame:
        return FRAME

    @dg.asset
    def data() -> dict:
        return DATA

    @dg.asset
    def melody() -> Melody:
        return MELODY

    @dg.asset
    def melodies() -> MelodySet:
        return MELODY_SET

    @dg.asset
    def audio() -> AudioFile:
        return staged

    @dg.asset
    def consumer(frame, data, melody, melodies, audio) -> list:
        received.update(frame=frame, data=data, melody=melody, melodies=melodies, audio=audio)
        return ["ok"]

    result = dg.materialize(
        [frame, data, melody, melodies, audio, consumer],
        instance=instance,
        resources={"settings": s, "io_manager": StorageIOManager(settings=s)},
    )
    assert result.success
    root = s.storage_root
    fs = root.fs
    found = sorted(p[len(root.path) + 1 :] for p in fs.find(root.path))
    assert found == sorted(
        [
            "assets/audio.wav",
            "assets/consumer.json",
            "assets/data.json",
            "assets/frame.parquet",
            "assets/melodies.melodies/index.parquet",
            "assets/melodies.melodies/other.json",
            "assets/melodies.melodies/other.mid",
            f"assets/melodies.melodies/{MELODY.name}.json",
            f"assets/melodies.melodies/{MELODY.name}.mid",
            "assets/melody.melody.json",
            "assets/melody.mid",
        ]
    )
    assert received["frame"].equals(FRAME)
    assert received["data"] == DATA
    assert received["melody"] == MELODY
    assert received["melodies"] == MELODY_SET
    assert received["audio"].path == str(root / "assets" / "audio.wav")
    assert UPath(received["audio"].path).read_bytes() == staged_bytes
    assert not Path(staged.path).exists()
    assert json.loads((root / "assets" / "data.json").read_text()) == DATA


def test_memory_atomic_bytes_and_dir(memory_settings):
    root = memory_settings.storage_root
    target = root / "blobs" / "x.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    folder = root / "dir"
    atomic_write_dir(folder, lambda d: (d / "a.txt").write_text("A"))
    atomic_write_dir(folder, lambda d: (d / "b.txt").write_text("B"))
    names = sorted(p.rsplit("/", 1)[1] for p in root.fs.find(root.path))
    assert names == ["b.txt", "x.bin"]


def test_memory_failed_write_keeps_old_content(memory_settings, monkeypatch):
    root = memory_settings.storage_root
    target = root / "x.json"
    atomic_write_bytes(target, b'{"v": 1}')

    def broken(self, data):
        raise OSError("connection reset")

    monkeypatch.setattr(type(target), "write_bytes", broken)
    with pytest.raises(OSError, match="connection reset"):
        atomic_write_bytes(target, b'{"v": 2}')
    monkeypatch.undo()
    assert target.read_bytes() == b'{"v": 1}'
    assert [p.rsplit("/", 1)[1] for p in root.fs.find(root.path)] == ["x.json"]


# ---- atomicity on a local folder ---------------------------------------------------------------


def test_failed_write_midway_keeps_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = as_upath(tmp_path / "store" / "value.json")
    atomic_write_bytes(target, b"old content")
    cls = type(target)
    real_open = open

    def half_then_fail(self, data):
        with real_open(self.path, "wb") as f:  # half of the bytes reach the temporary file
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(cls, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new content that never fully lands")
    monkeypatch.undo()
    assert Path(target.path).read_bytes() == b"old content"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["value.json"]


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    target = as_upath(tmp_path / "value.bin")
    atomic_write_bytes(target, b"old")

    def fail(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(storage, "_replace", fail)
    with pytest.raises(PermissionError):
        atomic_write_bytes(target, b"new")
    with pytest.raises(PermissionError):
        atomic_copy_file(__file__, target)
    monkeypatch.undo()
    assert Path(target.path).read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value.bin"]


def test_atomic_copy_file_streams_in_chunks(tmp_path):
    src = tmp_path / "src.bin"
    data = np.random.default_rng(0).bytes(300_001)
    src.write_bytes(data)
    target = as_upath(tmp_path / "out" / "copy.bin")
    atomic_copy_file(src, target, chunk=4096)
    assert hashlib.sha256(Path(target.path).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.bin"]


def test_atomic_write_dir_replaces_the_folder_and_leaves_no_temp_folders(tmp_path):
    target = as_upath(tmp_path / "sets" / "x.melodies")

    def first(d: Path):
        (d / "a.json").write_text("A")
        (d / "sub").mkdir()
        (d / "sub" / "deep.txt").write_text("deep")

    def second(d: Path):
        (d / "b.json").write_text("B")

    atomic_write_dir(target, first)
    assert tree(tmp_path / "sets") == ["x.melodies/a.json", "x.melodies/sub/deep.txt"]
    atomic_write_dir(target, second)
    assert tree(tmp_path / "sets") == ["x.melodies/b.json"]
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == ["x.melodies"]

    def broken(d: Path):
        (d / "c.json").write_text("C")
        raise RuntimeError("fill failed")

    with pytest.raises(RuntimeError, match="fill failed"):
        atomic_write_dir(target, broken)
    assert tree(tmp_path / "sets") == ["x.melodies/b.json"]
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == ["x.melodies"]


def test_a_changed_payload_type_removes_the_stale_file(tmp_path):
    """An asset that returned a dict and now returns a DataFrame must load as the DataFrame."""
    import dagster as dg
    import polars as pl

    from trance_assets.io_managers import StorageIOManager
    from trance_assets.resources import SettingsResource

    settings = SettingsResource(storage_url=str(tmp_path / "storage"))
    resources = {"io_manager": StorageIOManager(settings=settings)}

    @dg.asset(name="thing")
    def thing_v1():
        return {"a": 1}

    assert dg.materialize([thing_v1], resources=resources).success
    base = tmp_path / "storage" / "assets"
    assert (base / "thing.json").exists()

    @dg.asset(name="thing")
    def thing_v2():
        return pl.DataFrame({"a": [1, 2]})

    seen = {}

    @dg.asset
    def reader(thing):
        seen["value"] = thing

    assert dg.materialize([thing_v2, reader], resources=resources).success
    assert sorted(p.name for p in base.iterdir() if p.name.startswith("thing")) == ["thing.parquet"]
    assert seen["value"].to_dict(as_series=False) == {"a": [1, 2]}

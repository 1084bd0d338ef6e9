"""The IO manager: one object per asset (or per partition) under <storage>/assets/, written atomically.

Payloads and their files (the suffix tells the loader what it holds):

| Python value                | stored as                                   |
|-----------------------------|---------------------------------------------|
| `Melody`                    | `<name>.melody.json` (exact) + `<name>.mid` |
| `MelodySet`                 | folder `<name>.melodies/` (a .mid and a .json per melody, index.parquet) |
| `AudioFile`                 | `<name><original suffix>` (bytes copied as they are) + `<name><suffix>.json` (its info) |
| `Stems`                     | folder `<name>.stems/` (lead.wav, residual.wav as float WAV, stems.json) |
| `polars.DataFrame`          | `<name>.parquet`                            |
| `dict` / `list`             | `<name>.json`                               |
| `None`                      | nothing (the asset wrote its own files)     |

`<name>` is the last part of the asset key, inside folders for the other parts; a partitioned
asset stores `<asset path>/<partition key><suffix>`. An unpartitioned asset that depends on a
partitioned one receives `{partition_key: value}` for every partition.
"""


import io
import json

import dagster as dg
import polars as pl
from upath import UPath

from .audio.io import AUDIO_EXTENSIONS
from .audio.types import AudioFile, Stems, discard_staged, read_stems, write_stems
from .music.melody import Melody, MelodySet
from .resources import SettingsResource
from .storage import TMP_MARK, atomic_copy_file, atomic_write_bytes, atomic_write_dir, atomic_write_parquet, atomic_write_text, is_local, local_path

MELODY = ".melody.json"
MELODIES = ".melodies"
STEMS = ".stems"
PARQUET = ".parquet"
JSON = ".json"
# Probe order: the most specific suffixes first (".melody.json" before ".json").
SUFFIXES = (MELODY, MELODIES, STEMS, PARQUET, *AUDIO_EXTENSIONS, JSON)


def write_melody_set(folder, melodies: MelodySet) -> None:
    rows = []
    for m in melodies:
        (folder / f"{m.name}.json").write_text(m.to_json())
        (folder / f"{m.name}.mid").write_bytes(m.to_midi_bytes())
        rows.append({"name": m.name, "key": m.key, "bpm": m.bpm, "bars": m.n_bars, "notes": len(m.notes)})
    pl.DataFrame(rows, schema={"name": pl.String, "key": pl.String, "bpm": pl.Float64, "bars": pl.Int64, "notes": pl.Int64}).write_parquet(
        folder / "index.parquet"
    )


def read_melody_set(folder: UPath) -> MelodySet:
    index = pl.read_parquet(io.BytesIO((folder / "index.parquet").read_bytes()))
    return MelodySet(tuple(Melody.from_json((folder / f"{n}.json").read_text()) for n in index["name"]))


class StorageIOManager(dg.ConfigurableIOManager):
    """Stores asset values under `<settings.storage_url>/assets/` (local folder or fsspec URL)."""

    settings: SettingsResource

    def _base(self, context) -> UPath:
        key = context.asset_key.path
        return self.settings.storage_root.joinpath("assets", *key)

    def _stem(self, context, partition_key: str | None) -> UPath:
        base = self._base(context)
        return base / partition_key if partition_key is not None else base.parent / base.name

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        stem = self._stem(context, context.partition_key if context.has_partition_key else None)
        written = self._write(stem, obj)
        self._remove_stale(stem, keep=written)
        context.add_output_metadata({"storage_path": dg.MetadataValue.path(str(written))})

    def _write(self, stem: UPath, obj) -> UPath:
        if isinstance(obj, Melody):
            atomic_write_bytes(stem.with_name(stem.name + ".mid"), obj.to_midi_bytes())
            return atomic_write_text(stem.with_name(stem.name + MELODY), obj.to_json())
        if isinstance(obj, MelodySet):
            return atomic_write_dir(stem.with_name(stem.name + MELODIES), lambda d: write_melody_set(d, obj))
        if isinstance(obj, Stems):
            return atomic_write_dir(stem.with_name(stem.name + STEMS), lambda d: write_stems(d, obj))
        if isinstance(obj, AudioFile):
            target = atomic_copy_file(obj.path, stem.with_name(stem.name + obj.suffix))
            info_path = stem.with_name(stem.name + obj.suffix + JSON)
            if obj.info:
                atomic_write_text(info_path, json.dumps(obj.info, indent=1, sort_keys=True, default=str))
            elif info_path.exists():
                info_path.unlink()
            if obj.temporary:
                discard_staged(obj)
            return target
        if isinstance(obj, pl.DataFrame):
            return atomic_write_parquet(stem.with_name(stem.name + PARQUET), obj)
        if isinstance(obj, (dict, list)):
            return atomic_write_text(stem.with_name(stem.name + JSON), json.dumps(obj, indent=1, sort_keys=True, default=str))
        raise TypeError(f"StorageIOManager cannot store a {type(obj).__name__}; see io_managers.py for the payloads it knows")

    @staticmethod
    def _remove_stale(stem: UPath, keep: UPath) -> None:
        """Drop a value stored under another suffix (the asset's return type changed), so a load
        never finds the old one first."""
        for suffix in SUFFIXES:
            p = stem.with_name(stem.name + suffix)
            if p.name != keep.name and p.exists():
                p.fs.rm(p.path, recursive=True)

    def load_input(self, context: dg.InputContext):
        upstream = context.upstream_output
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if context.has_partition_key and len(keys) == 1:  # partition-to-partition
                return self._read(self._stem(upstream, keys[0]))
            return {k: self._read(self._stem(upstream, k)) for k in keys}
        return self._read(self._stem(upstream, None))

    def _read(self, stem: UPath):
        return read_value(stem)


def read_value(stem: UPath):
    """The value stored at `stem` (whichever payload suffix exists)."""
    for suffix in SUFFIXES:
        p = stem.with_name(stem.name + suffix)
        if not p.exists():
            continue
        if suffix == MELODY:
            return Melody.from_json(p.read_text())
        if suffix == MELODIES:
            return read_melody_set(p)
        if suffix == STEMS:
            return read_stems(p)
        if suffix == PARQUET:
            return pl.read_parquet(io.BytesIO(p.read_bytes()))
        if suffix == JSON:
            return json.loads(p.read_text())
        info_path = p.with_name(p.name + JSON)
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return AudioFile(path=str(local_path(p)) if is_local(p) else str(p), suffix=suffix, info=info)
    raise FileNotFoundError(f"no stored value at {stem}.* (materialize the upstream asset first)")


def read_stored(storage_root: UPath, asset_path: list[str]):
    """The stored value of an unpartitioned asset, or None when it was never materialized (for
    steps that depend on it with `deps=` and must not fail while it is missing)."""
    try:
        return read_value(storage_root.joinpath("assets", *asset_path))
    except FileNotFoundError:
        return None


def load_partition_values(storage_root: UPath, asset_path: list[str], keys: list[str] | None = None) -> dict:
    """{partition_key: value} for every stored partition of an asset (or just `keys`), read by path.

    For corpus-level steps that depend on a partitioned asset with `deps=`: partitions that never
    materialized (a corrupt file's, say) are simply absent instead of failing the load.
    """
    base = storage_root.joinpath("assets", *asset_path)
    if not base.exists():
        return {}
    found = set()
    for p in base.iterdir():
        name = p.name
        if name.startswith("."):
            continue
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                found.add(name[: -len(suffix)])
                break
    wanted = sorted(found if keys is None else found & set(keys))
    return {k: read_value(base / k) for k in wanted}


__all__ = ["StorageIOManager", "TMP_MARK"]

"""Atomic writes on UPath: local folders and any fsspec URL (s3://, gs://, memory://, ...).

Every write goes to a temporary sibling first and is then renamed into place, so a reader never
sees a half-written file. On a local filesystem the rename is `os.replace` (atomic); on object
stores it is the filesystem's move (copy + delete of the temporary object), which still never
exposes a partial object under the final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from upath import UPath

TMP_MARK = ".tmp-"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a local file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def as_upath(location: str | os.PathLike) -> UPath:
    """A UPath for a local path (relative paths resolved against the cwd) or an fsspec URL."""
    text = os.fspath(location)
    if "://" not in text:
        return UPath(Path(text).expanduser().resolve())
    return UPath(text)


def is_local(p: UPath) -> bool:
    return p.protocol in ("", "file", "local")


def local_path(p: UPath) -> Path:
    if not is_local(p):
        raise ValueError(f"{p} is not on the local filesystem")
    return Path(p.path)


def _tmp_sibling(target: UPath) -> UPath:
    return target.with_name(f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")


def _replace(src: UPath, dst: UPath) -> None:
    if is_local(dst):
        os.replace(local_path(src), local_path(dst))
    else:
        src.fs.mv(src.path, dst.path)


def atomic_write_bytes(target: UPath, data: bytes) -> UPath:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        tmp.write_bytes(data)
        _replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def atomic_write_parquet(target: UPath, df) -> UPath:
    """A polars DataFrame as parquet, written atomically."""
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return atomic_write_bytes(target, buf.getvalue())


def atomic_write_text(target: UPath, text: str) -> UPath:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_copy_file(src: str | os.PathLike, target: UPath, chunk: int = 1 << 20) -> UPath:
    """Stream a local file into `target` (temporary sibling, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        with open(src, "rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, chunk)
        _replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def atomic_write_dir(target: UPath, fill: Callable[[Path], None]) -> UPath:
    """Build a folder with `fill(local_dir)` and publish it as `target` in one step.

    Local: the folder is built beside the target and swapped in with two renames (the old version
    is moved aside first and deleted after). Remote: built in a local temp folder, uploaded under a
    temporary prefix, then moved into place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    if is_local(target):
        tmp_local = local_path(tmp)
        tmp_local.mkdir(parents=True)
        try:
            fill(tmp_local)
            dst = local_path(target)
            old = None
            if dst.exists():
                old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:12]}")
                os.replace(dst, old)
            os.replace(tmp_local, dst)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp_local.exists():
                shutil.rmtree(tmp_local, ignore_errors=True)
        return target
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fill(Path(d))
        tmp.fs.put(d.rstrip("/") + "/", tmp.path, recursive=True)
        if target.exists():
            target.fs.rm(target.path, recursive=True)
        tmp.fs.mv(tmp.path, target.path, recursive=True)
    return target

"""TFRecord files without TensorFlow: the framing TensorFlow's `TFRecordWriter` / `TFRecordDataset` use.

A TFRecord file is a plain concatenation of records, each framed as

    uint64 little-endian  length of the data (n)
    uint32 little-endian  masked CRC32C of those 8 length bytes
    n bytes               the data (here: a serialized protobuf, e.g. a NoteSequence)
    uint32 little-endian  masked CRC32C of the data

CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78), computed by the compiled
`google_crc32c` package. TensorFlow stores it *masked*:
``((crc >> 15) | (crc << 17)) + 0xA282EAD8`` modulo 2**32 (a rotation right by 15 plus a constant,
so that a CRC of data that itself contains CRCs is not degenerate). Only uncompressed files are
handled (no GZIP/ZLIB record compression).

`write_tfrecord` is atomic like every write in `trance_assets.storage`: the records are streamed into
a temporary sibling, which is renamed into place only when every record was written, so a reader
never sees a half-written file. The target may be a local path (str, `pathlib.Path`) or a
`upath.UPath` (local or any fsspec URL). `read_tfrecord` streams the records back and, unless told
otherwise, checks both CRCs of each; a damaged or truncated file raises `TFRecordError`, which names
the file, the record index, its byte offset and what failed.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

import google_crc32c
from upath import UPath

from ..storage import _replace, _tmp_sibling, as_upath, is_local, local_path

__all__ = [
    "TFRecordError",
    "masked_crc32c",
    "frame_record",
    "write_tfrecord",
    "read_tfrecord",
]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length bytes
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 12
FOOTER_SIZE = _CRC.size  # 4
_WRITE_BUFFER = 1 << 20


class TFRecordError(ValueError):
    """A TFRecord file is truncated or fails a CRC check.

    Attributes: `path` (str), `index` (0-based record number), `offset` (byte offset of the start of
    that record's frame) and `reason` (what failed).
    """

    def __init__(self, path: object, index: int, offset: int, reason: str) -> None:
        self.path = str(path)
        self.index = index
        self.offset = offset
        self.reason = reason
        super().__init__(f"{self.path}: record {index} at byte offset {offset}: {reason}")


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC32C of `data` (a uint32)."""
    return _mask(google_crc32c.value(data))


def _as_bytes(record: object, index: int) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, (bytearray, memoryview)):
        return bytes(record)
    raise TypeError(
        f"TFRecord record {index} must be bytes (e.g. message.SerializeToString()), "
        f"got {type(record).__name__}"
    )


def _frame_parts(data: bytes) -> tuple[bytes, bytes]:
    """(header, footer) for `data`: header = length + its masked CRC, footer = data's masked CRC."""
    length = _LENGTH.pack(len(data))
    return (
        length + _CRC.pack(masked_crc32c(length)),
        _CRC.pack(masked_crc32c(data)),
    )


def frame_record(data: bytes) -> bytes:
    """One record exactly as it appears in a TFRecord file."""
    data = _as_bytes(data, 0)
    header, footer = _frame_parts(data)
    return header + data + footer


def _write_stream(f, records: Iterable[bytes]) -> int:
    n = 0
    for i, record in enumerate(records):
        data = _as_bytes(record, i)
        header, footer = _frame_parts(data)
        f.write(header)
        f.write(data)
        f.write(footer)
        n += 1
    return n


def _to_upath(path: str | os.PathLike | UPath) -> UPath:
    return path if isinstance(path, UPath) else as_upath(path)


def write_tfrecord(path: str | os.PathLike | UPath, records: Iterable[bytes]) -> int:
    """Write `records` (serialized bytes each) to a TFRecord file at `path`; returns how many.

    Atomic: the records stream into a temporary sibling that is renamed to `path` at the end. If the
    iterable raises (or a record is not bytes) the temporary file is removed and an existing file at
    `path` is left untouched. Parent folders are created.
    """
    target = _to_upath(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        if is_local(target):
            with open(local_path(tmp), "wb", buffering=_WRITE_BUFFER) as f:
                n = _write_stream(f, records)
        else:
            # fsspec files buffer and upload in blocks, so this streams as well.
            with tmp.open("wb") as f:
                n = _write_stream(f, records)
        _replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def _open_for_read(path: str | os.PathLike | UPath):
    """(file object, size in bytes or None, display name)."""
    up = _to_upath(path)
    if not is_local(up):
        f = up.open("rb")
        size = getattr(f, "size", None)
        return f, size, str(up)
    p = local_path(up)
    f = open(p, "rb")
    return f, os.fstat(f.fileno()).st_size, str(p)


def read_tfrecord(path: str | os.PathLike | UPath, *, verify: bool = True) -> Iterator[bytes]:
    """Yield the data of each record in the TFRecord file at `path`, in order.

    `verify=True` (the default) checks the masked CRC32C of every length field and every record's
    data. A CRC mismatch (only when verifying) or a file that ends inside a record raises
    `TFRecordError` naming the file, the record index, the byte offset of the record and the cause.
    An empty file holds zero records.
    """
    f, size, name = _open_for_read(path)
    with f:
        index = 0
        offset = 0
        while True:
            header = f.read(HEADER_SIZE)
            if not header:
                return
            if len(header) < HEADER_SIZE:
                raise TFRecordError(
                    name, index, offset,
                    f"truncated file: record header needs {HEADER_SIZE} bytes, only {len(header)} left",
                )
            length, length_crc = _HEADER.unpack(header)
            if verify:
                expected = masked_crc32c(header[:8])
                if length_crc != expected:
                    raise TFRecordError(
                        name, index, offset,
                        f"length CRC mismatch (stored 0x{length_crc:08x}, computed 0x{expected:08x}; "
                        f"length field says {length} bytes)",
                    )
            remaining = None if size is None else size - offset - HEADER_SIZE
            if remaining is not None and length + FOOTER_SIZE > remaining:
                raise TFRecordError(
                    name, index, offset,
                    f"truncated file: record of {length} data bytes + {FOOTER_SIZE} CRC bytes, "
                    f"only {remaining} bytes left",
                )
            data = f.read(length)
            footer = f.read(FOOTER_SIZE)
            if len(data) < length or len(footer) < FOOTER_SIZE:
                got = len(data) + len(footer)
                raise TFRecordError(
                    name, index, offset,
                    f"truncated file: record of {length} data bytes + {FOOTER_SIZE} CRC bytes, "
                    f"only {got} bytes left",
                )
            if verify:
                (data_crc,) = _CRC.unpack(footer)
                expected = masked_crc32c(data)
                if data_crc != expected:
                    raise TFRecordError(
                        name, index, offset,
                        f"data CRC mismatch (stored 0x{data_crc:08x}, computed 0x{expected:08x}; "
                        f"{length} data bytes)",
                    )
            yield data
            offset += HEADER_SIZE + length + FOOTER_SIZE
            index += 1

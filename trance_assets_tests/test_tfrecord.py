"""TFRecord framing (formats.tfrecord), checked against an independent reader and CRC32C written here."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from upath import UPath

from trance_assets.formats.tfrecord import (
    TFRecordError,
    frame_record,
    masked_crc32c,
    read_tfrecord,
    write_tfrecord,
)

# ---- an independent CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven -----------


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def ref_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def ref_mask(crc: int) -> int:
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    return (rotated + 0xA282EAD8) & 0xFFFFFFFF


def ref_read(path: Path) -> list[bytes]:
    """Independent TFRecord reader: parses the framing by hand and asserts both CRCs of every record."""
    buf = Path(path).read_bytes()
    pos = 0
    out = []
    while pos < len(buf):
        assert pos + 12 <= len(buf), f"truncated header at {pos}"
        length_bytes = buf[pos : pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", buf[pos + 8 : pos + 12])
        assert length_crc == ref_mask(ref_crc32c(length_bytes)), f"length CRC of record at {pos}"
        data = buf[pos + 12 : pos + 12 + length]
        assert len(data) == length, f"truncated data at {pos}"
        (data_crc,) = struct.unpack("<I", buf[pos + 12 + length : pos + 16 + length])
        assert data_crc == ref_mask(ref_crc32c(data)), f"data CRC of record at {pos}"
        out.append(data)
        pos += 16 + length
    assert pos == len(buf)
    return out


# ---- the reference itself ------------------------------------------------------------------------


def test_reference_crc32c_standard_vector() -> None:
    assert ref_crc32c(b"123456789") == 0xE3069283
    assert ref_crc32c(b"") == 0


def test_masked_crc32c_matches_reference() -> None:
    samples = [b"", b"a", b"hello", b"123456789", bytes(range(256)), b"\x00" * 1000, os.urandom(4097)]
    for data in samples:
        assert masked_crc32c(data) == ref_mask(ref_crc32c(data))


# ---- framing -------------------------------------------------------------------------------------

# b"hello" framed, computed with the table-driven CRC above (crc32c(b"hello") = 0x9A71BB4C,
# masked 0x191C1FBB; crc32c of the 8 length bytes masked = 0x3E04B2EA).
HELLO_FRAME = bytes.fromhex("0500000000000000" "eab2043e" "68656c6c6f" "bb1f1c19")


def test_known_answer_hello() -> None:
    assert ref_crc32c(b"hello") == 0x9A71BB4C
    independent = (
        struct.pack("<Q", 5)
        + struct.pack("<I", ref_mask(ref_crc32c(struct.pack("<Q", 5))))
        + b"hello"
        + struct.pack("<I", ref_mask(ref_crc32c(b"hello")))
    )
    assert independent == HELLO_FRAME
    assert frame_record(b"hello") == HELLO_FRAME


def test_file_is_concatenated_frames(tmp_path: Path) -> None:
    records = [b"hello", b"", b"x" * 300]
    p = tmp_path / "a.tfrecord"
    assert write_tfrecord(p, records) == 3
    assert p.read_bytes() == b"".join(frame_record(r) for r in records)
    assert p.read_bytes()[: len(HELLO_FRAME)] == HELLO_FRAME


def test_round_trip_and_independent_reader(tmp_path: Path) -> None:
    records = [os.urandom(n) for n in (0, 1, 7, 8, 255, 4096, 70_000)] + [b"hello"]
    p = tmp_path / "sub" / "round.tfrecord"  # parent is created
    assert write_tfrecord(p, iter(records)) == len(records)
    assert list(read_tfrecord(p)) == records
    assert list(read_tfrecord(str(p), verify=False)) == records
    assert ref_read(p) == records


def test_upath_target(tmp_path: Path) -> None:
    p = UPath(tmp_path) / "u.tfrecord"
    assert write_tfrecord(p, [b"a", b"bc"]) == 2
    assert list(read_tfrecord(p)) == [b"a", b"bc"]
    assert ref_read(tmp_path / "u.tfrecord") == [b"a", b"bc"]


def test_memory_filesystem_target() -> None:
    p = UPath("memory://tfrecord-test/x/m.tfrecord")
    try:
        assert write_tfrecord(p, [b"one", b"", b"three"]) == 3
        assert p.read_bytes() == b"".join(frame_record(r) for r in [b"one", b"", b"three"])
        assert list(read_tfrecord(p)) == [b"one", b"", b"three"]
        assert [q.name for q in p.parent.iterdir()] == ["m.tfrecord"]  # no temporary left behind
    finally:
        p.fs.rm("/tfrecord-test", recursive=True)


def test_empty_record(tmp_path: Path) -> None:
    p = tmp_path / "e.tfrecord"
    assert write_tfrecord(p, [b""]) == 1
    assert p.stat().st_size == 16
    assert list(read_tfrecord(p)) == [b""]
    assert ref_read(p) == [b""]


def test_zero_records_is_an_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "z.tfrecord"
    assert write_tfrecord(p, []) == 0
    assert p.read_bytes() == b""
    assert list(read_tfrecord(p)) == []


def test_bytes_like_records_and_type_errors(tmp_path: Path) -> None:
    p = tmp_path / "b.tfrecord"
    assert write_tfrecord(p, [bytearray(b"ab"), memoryview(b"cd")]) == 2
    assert list(read_tfrecord(p)) == [b"ab", b"cd"]
    with pytest.raises(TypeError, match="record 1"):
        write_tfrecord(p, [b"ok", "not bytes"])
    assert list(read_tfrecord(p)) == [b"ab", b"cd"]  # the old file is untouched


def test_write_is_atomic_when_the_iterable_fails(tmp_path: Path) -> None:
    p = tmp_path / "atomic.tfrecord"
    write_tfrecord(p, [b"old"])

    def gen():
        yield b"new"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_tfrecord(p, gen())
    assert list(read_tfrecord(p)) == [b"old"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["atomic.tfrecord"]


# ---- damaged files -------------------------------------------------------------------------------


def _three_records(tmp_path: Path) -> tuple[Path, bytes]:
    p = tmp_path / "d.tfrecord"
    write_tfrecord(p, [b"first", b"second record", b"third"])
    return p, p.read_bytes()


def test_corrupted_data_byte(tmp_path: Path) -> None:
    p, buf = _three_records(tmp_path)
    second = len(frame_record(b"first"))  # byte offset of record 1
    bad = bytearray(buf)
    bad[second + 12 + 3] ^= 0x01  # a byte inside "second record"
    p.write_bytes(bytes(bad))
    it = read_tfrecord(p)
    assert next(it) == b"first"
    with pytest.raises(TFRecordError) as ei:
        next(it)
    err = ei.value
    assert (err.index, err.offset) == (1, second)
    msg = str(err)
    assert str(p) in msg and "record 1" in msg and f"offset {second}" in msg and "data CRC" in msg
    # without verification the damaged bytes come back as they are
    assert list(read_tfrecord(p, verify=False))[1] == bytes(bad[second + 12 : second + 12 + 13])


def test_corrupted_data_crc_field(tmp_path: Path) -> None:
    p, buf = _three_records(tmp_path)
    bad = bytearray(buf)
    bad[-1] ^= 0xFF  # last byte of the last record's data CRC
    p.write_bytes(bytes(bad))
    with pytest.raises(TFRecordError, match="record 2 .*data CRC"):
        list(read_tfrecord(p))


def test_corrupted_length(tmp_path: Path) -> None:
    p, buf = _three_records(tmp_path)
    bad = bytearray(buf)
    bad[0] = 0xFF  # length 255 instead of 5
    p.write_bytes(bytes(bad))
    with pytest.raises(TFRecordError) as ei:
        list(read_tfrecord(p))
    assert (ei.value.index, ei.value.offset) == (0, 0)
    assert "length CRC" in str(ei.value)
    # unverified, the wrong length then runs into the others' bytes and past the end
    bad[0:8] = struct.pack("<Q", 1 << 60)
    p.write_bytes(bytes(bad))
    with pytest.raises(TFRecordError, match="truncated"):
        list(read_tfrecord(p, verify=False))


@pytest.mark.parametrize("cut", [1, 4, 5, 10, 20])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    p, buf = _three_records(tmp_path)
    p.write_bytes(buf[:-cut])
    last = len(frame_record(b"first")) + len(frame_record(b"second record"))
    with pytest.raises(TFRecordError) as ei:
        list(read_tfrecord(p))
    assert "truncated" in str(ei.value)
    assert str(p) in str(ei.value)
    assert (ei.value.index, ei.value.offset) == (2, last)
    with pytest.raises(TFRecordError, match="truncated"):
        list(read_tfrecord(p, verify=False))


def test_truncated_inside_header(tmp_path: Path) -> None:
    p = tmp_path / "h.tfrecord"
    p.write_bytes(frame_record(b"ok") + frame_record(b"next")[:7])
    with pytest.raises(TFRecordError, match=r"record 1 at byte offset 18: truncated"):
        list(read_tfrecord(p))

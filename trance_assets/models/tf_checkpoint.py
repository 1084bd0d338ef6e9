"""Read (and, for tests, write) TensorFlow checkpoints without TensorFlow.

Pure Python + numpy + google-crc32c; no TensorFlow, no TF protos. Written from the public file
formats; nothing here is copied from TensorFlow, LevelDB or Magenta.

Formats
-------
*Table* (LevelDB "SSTable", the container of both checkpoint kinds), uncompressed only:

* file = data blocks, a metaindex block, an index block, then a 48-byte footer;
* footer = metaindex BlockHandle, index BlockHandle (each handle = varint64 offset, varint64 size),
  zero padding to 40 bytes, then the 8-byte magic ``0xdb4775248b80fb57`` little-endian;
* block = entries, then a uint32 LE restart-offset array, then uint32 LE ``num_restarts``; an entry
  is ``varint32 shared, varint32 non_shared, varint32 value_length, key[shared:], value`` where the
  key shares ``shared`` leading bytes with the previous key (``shared == 0`` at each restart point);
* each block on disk is followed by a 5-byte trailer: 1 byte compression type (0 = none; TF writes
  checkpoints uncompressed) and a uint32 LE *masked* crc32c of ``block contents + type byte``
  (mask: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod 2**32);
* the index block maps a separator key (>= every key of a data block) to that block's handle.

*V2 checkpoint* (``tf.train.Saver`` V2 / ``tf.train.Checkpoint``; MusicVAE): ``<prefix>.index`` is a
table whose key ``""`` holds a ``BundleHeaderProto`` {1 num_shards int32, 2 endianness enum
(0 LITTLE, 1 BIG), 3 version VersionDef {1 producer, 2 min_consumer, 3 bad_consumers}} and every
other key is a variable name holding a ``BundleEntryProto`` {1 dtype, 2 shape TensorShapeProto
{2 dim {1 size int64, 2 name}, 3 unknown_rank}, 3 shard_id, 4 offset int64, 5 size int64,
6 crc32c fixed32, 7 slices TensorSliceProto}. The tensor bytes are the raw (C-order) buffer at
``offset`` in ``<prefix>.data-%05d-of-%05d`` (shard_id, num_shards); ``crc32c`` is the *masked*
crc32c of those bytes (the TF writer stores ``Mask(crc)``, the reader compares ``Unmask(stored)``).

*V1 TensorSlice checkpoint* (legacy ``Saver(write_version=V1)``; the one file inside a Magenta
``.mag``): a single table whose values are ``SavedTensorSlices`` {1 meta, 2 data}. Key ``""`` holds
``meta`` = ``SavedTensorSliceMeta`` {1 tensor: repeated SavedSliceMeta {1 name, 2 shape, 3 type,
4 slice}, 2 versions}; every other key (an OrderedCode encoding of name + slice) holds ``data`` =
``SavedSlice`` {1 name, 2 slice TensorSliceProto {1 extent {1 start, 2 length}}, 3 data TensorProto
{1 dtype, 2 tensor_shape, 4 tensor_content, 5 float_val, 6 double_val, 7 int_val, 10 int64_val,
11 bool_val, 13 half_val}}. An extent without ``length`` covers the whole dimension.

*``.mag``*: note_seq ``generator_pb2.GeneratorBundle`` {generator_details {id, description},
bundle_details {description}, checkpoint_file (repeated bytes; one V1 file), metagraph_file}.

DataType numbers (tensorflow/core/framework/types.proto): DT_FLOAT=1, DT_DOUBLE=2, DT_INT32=3,
DT_UINT8=4, DT_INT16=5, DT_INT8=6, DT_STRING=7, DT_INT64=9, DT_BOOL=10, DT_HALF=19.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable, Iterator

import google_crc32c
import numpy as np

__all__ = [
    "CheckpointError",
    "TABLE_MAGIC",
    "crc32c",
    "mask_crc",
    "unmask_crc",
    "decode_varint",
    "encode_varint",
    "iter_proto_fields",
    "parse_proto",
    "read_table",
    "write_table",
    "read_v2_checkpoint",
    "write_v2_checkpoint",
    "read_v1_checkpoint",
    "write_v1_checkpoint",
    "read_mag_bundle",
    "write_mag_bundle",
]


class CheckpointError(ValueError):
    """A checkpoint or table file is malformed, corrupted or uses an unsupported feature."""


TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------- crc32c


def crc32c(data: bytes) -> int:
    """Plain (unmasked) CRC-32C of ``data``."""
    return google_crc32c.value(bytes(data))


def mask_crc(crc: int) -> int:
    """The LevelDB/TFRecord CRC mask: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


# ---------------------------------------------------------------------------------- varints/proto


def decode_varint(buf: bytes, pos: int = 0, max_bytes: int = 10) -> tuple[int, int]:
    """Decode an unsigned base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    for i in range(max_bytes):
        if pos >= len(buf):
            raise CheckpointError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise CheckpointError(f"varint longer than {max_bytes} bytes ending at byte {pos}")


def encode_varint(value: int) -> bytes:
    """Unsigned base-128 varint; negative ints are written as their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int64(v: int) -> int:
    """Reinterpret a decoded varint as a signed 64-bit int (proto int32/int64 fields)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def iter_proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` for each field of a serialized message.

    ``value`` is an ``int`` for wire types 0 (varint), 1 (fixed64, unsigned LE) and 5 (fixed32,
    unsigned LE), and ``bytes`` for wire type 2 (length-delimited). Groups (3/4) are rejected.
    """
    buf = bytes(buf)
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CheckpointError(f"protobuf field number 0 at byte {pos}")
        if wire == 0:
            value, pos = decode_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise CheckpointError("truncated fixed64 field")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > n:
                raise CheckpointError(f"length-delimited field {field} overruns the message")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > n:
                raise CheckpointError("truncated fixed32 field")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def parse_proto(buf: bytes) -> dict[int, list[tuple[int, int | bytes]]]:
    """Group the fields of a message: ``{field_number: [(wire_type, value), ...]}``."""
    out: dict[int, list[tuple[int, int | bytes]]] = {}
    for field, wire, value in iter_proto_fields(buf):
        out.setdefault(field, []).append((wire, value))
    return out


def _last(fields: dict, number: int, default=None):
    vals = fields.get(number)
    return vals[-1][1] if vals else default


def _all(fields: dict, number: int) -> list:
    return [v for _, v in fields.get(number, [])]


def _packed(fields: dict, number: int, kind: str) -> list:
    """Values of a repeated scalar field, accepting packed and unpacked encodings.

    ``kind``: 'varint', 'fixed32' or 'fixed64'. Values are returned raw (unsigned)."""
    out: list = []
    for wire, value in fields.get(number, []):
        if wire == 2:
            data = value
            if kind == "varint":
                pos = 0
                while pos < len(data):
                    v, pos = decode_varint(data, pos)
                    out.append(v)
            else:
                size = 4 if kind == "fixed32" else 8
                if len(data) % size:
                    raise CheckpointError(f"packed field {number} length not a multiple of {size}")
                out.extend(struct.unpack(f"<{len(data) // size}{'I' if size == 4 else 'Q'}", data))
        else:
            out.append(value)
    return out


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return encode_varint((number << 3) | wire) + payload


def _f_varint(number: int, value: int) -> bytes:
    return _field(number, 0, encode_varint(value))


def _f_bytes(number: int, value: bytes) -> bytes:
    return _field(number, 2, encode_varint(len(value)) + bytes(value))


def _f_fixed32(number: int, value: int) -> bytes:
    return _field(number, 5, struct.pack("<I", value))


# ----------------------------------------------------------------------------------------- table


def _decode_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = decode_varint(buf, pos)
    size, pos = decode_varint(buf, pos)
    return offset, size, pos


def _encode_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


def _read_block(data: bytes, offset: int, size: int, what: str, verify_crc: bool = True) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointError(
            f"{what} block at offset {offset} (size {size}) runs past the end of the table "
            f"({len(data)} bytes)"
        )
    ctype = data[end]
    if ctype != 0:
        kind = {1: "snappy", 2: "zstd"}.get(ctype, "unknown")
        raise CheckpointError(
            f"{what} block at offset {offset} uses compression type {ctype} ({kind}); only "
            "uncompressed tables (type 0) are supported"
        )
    if verify_crc:
        stored = struct.unpack_from("<I", data, end + 1)[0]
        actual = crc32c(data[offset : end + 1])
        if unmask_crc(stored) != actual:
            raise CheckpointError(
                f"CRC mismatch in {what} block at offset {offset} (size {size}): stored "
                f"{unmask_crc(stored):#010x}, computed {actual:#010x}"
            )
    return data[offset:end]


def _iter_block(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) entries of one block, checking the restart array."""
    n = len(block)
    if n < 4:
        raise CheckpointError(f"{where}: block too short ({n} bytes)")
    num_restarts = struct.unpack_from("<I", block, n - 4)[0]
    restarts_start = n - 4 - 4 * num_restarts
    if num_restarts == 0 or restarts_start < 0:
        raise CheckpointError(f"{where}: bad restart count {num_restarts} for a {n}-byte block")
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, restarts_start))
    if any(r >= restarts_start and not (r == 0 and restarts_start == 0) for r in restarts):
        raise CheckpointError(f"{where}: restart offset past the entry area")
    pos = 0
    key = b""
    seen_restarts = 0
    while pos < restarts_start:
        entry_at = pos
        shared, pos = decode_varint(block, pos, 5)
        non_shared, pos = decode_varint(block, pos, 5)
        value_len, pos = decode_varint(block, pos, 5)
        if entry_at in restarts:
            seen_restarts += 1
            if shared != 0:
                raise CheckpointError(
                    f"{where}: entry at restart point {entry_at} shares {shared} key bytes"
                )
        if shared > len(key) or pos + non_shared + value_len > restarts_start:
            raise CheckpointError(f"{where}: corrupt entry at byte {entry_at}")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        value = block[pos : pos + value_len]
        pos += value_len
        yield key, value
    if restarts_start and seen_restarts != len(restarts):
        raise CheckpointError(f"{where}: restart offsets do not point at entry boundaries")


def _read_footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"file of {len(data)} bytes is too short to be a table")
    footer = data[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0]
    if magic != TABLE_MAGIC:
        raise CheckpointError(
            f"bad table magic {magic:#018x} (expected {TABLE_MAGIC:#018x}); not a TF checkpoint "
            "table"
        )
    m_off, m_size, pos = _decode_handle(footer, 0)
    i_off, i_size, _ = _decode_handle(footer, pos)
    return (m_off, m_size), (i_off, i_size)


def read_table(data: bytes, verify_crc: bool = True) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` entries of an uncompressed LevelDB-format table, in key order."""
    data = bytes(data)
    _, (i_off, i_size) = _read_footer(data)
    index = _read_block(data, i_off, i_size, "index", verify_crc)
    out: list[tuple[bytes, bytes]] = []
    for _, handle in _iter_block(index, f"index block at offset {i_off}"):
        off, size, _ = _decode_handle(handle)
        block = _read_block(data, off, size, "data", verify_crc)
        for key, value in _iter_block(block, f"data block at offset {off}"):
            if out and key <= out[-1][0]:
                raise CheckpointError(f"data block at offset {off}: keys out of order at {key!r}")
            out.append((key, value))
    return out


def _build_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    buf = bytearray()
    restarts = [0]
    last = b""
    for i, (key, value) in enumerate(entries):
        if i and i % restart_interval == 0:
            restarts.append(len(buf))
            shared = 0
        else:
            shared = 0
            limit = min(len(last), len(key))
            while shared < limit and last[shared] == key[shared]:
                shared += 1
        buf += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        buf += key[shared:] + value
        last = key
    for r in restarts:
        buf += struct.pack("<I", r)
    buf += struct.pack("<I", len(restarts))
    return bytes(buf)


def write_table(
    entries: Iterable[tuple[bytes, bytes]], block_size: int = 4096, restart_interval: int = 16
) -> bytes:
    """Serialize ``entries`` as an uncompressed table (keys sorted bytewise, must be unique).

    Data blocks are cut once their entries reach ``block_size`` bytes; a restart point every
    ``restart_interval`` entries (the index block uses 1, as LevelDB does); index keys are the
    last key of each block (a valid separator); the metaindex block is empty.
    """
    items = sorted((bytes(k), bytes(v)) for k, v in entries)
    for a, b in zip(items, items[1:]):
        if a[0] == b[0]:
            raise CheckpointError(f"duplicate table key {a[0]!r}")
    out = bytearray()

    def emit(block: bytes) -> bytes:
        handle = _encode_handle(len(out), len(block))
        out.extend(block)
        out.append(0)
        out.extend(struct.pack("<I", mask_crc(crc32c(block + b"\x00"))))
        return handle

    index_entries: list[tuple[bytes, bytes]] = []
    pending: list[tuple[bytes, bytes]] = []
    pending_size = 0
    for key, value in items:
        pending.append((key, value))
        pending_size += len(key) + len(value) + 3
        if pending_size >= block_size:
            index_entries.append((key, emit(_build_block(pending, restart_interval))))
            pending, pending_size = [], 0
    if pending:
        index_entries.append((pending[-1][0], emit(_build_block(pending, restart_interval))))
    meta_handle = emit(_build_block([], 1))
    index_handle = emit(_build_block(index_entries, 1))
    footer = meta_handle + index_handle
    footer += b"\x00" * (FOOTER_SIZE - 8 - len(footer)) + struct.pack("<Q", TABLE_MAGIC)
    out += footer
    return bytes(out)


# ------------------------------------------------------------------------------------- dtypes

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8 = 1, 2, 3, 4, 5, 6
DT_STRING, DT_INT64, DT_BOOL, DT_HALF = 7, 9, 10, 19

_NP_DTYPES: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype("<f4"),
    DT_DOUBLE: np.dtype("<f8"),
    DT_INT32: np.dtype("<i4"),
    DT_UINT8: np.dtype("u1"),
    DT_INT16: np.dtype("<i2"),
    DT_INT8: np.dtype("i1"),
    DT_INT64: np.dtype("<i8"),
    DT_BOOL: np.dtype("?"),
    DT_HALF: np.dtype("<f2"),
}


def _np_dtype(code: int, name: str) -> np.dtype:
    try:
        return _NP_DTYPES[code]
    except KeyError:
        raise CheckpointError(
            f"variable {name!r}: unsupported TF dtype enum {code} (supported: "
            f"{sorted(_NP_DTYPES)})"
        ) from None


def _tf_dtype(arr: np.ndarray, name: str) -> int:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    for code, cand in _NP_DTYPES.items():
        if cand == dt:
            return code
    raise CheckpointError(f"variable {name!r}: cannot write numpy dtype {arr.dtype}")


def _parse_shape(buf: bytes | None) -> tuple[int, ...]:
    if not buf:
        return ()
    fields = parse_proto(buf)
    if _last(fields, 3, 0):
        raise CheckpointError("tensor shape of unknown rank")
    dims = []
    for dim in _all(fields, 2):
        size = _int64(_last(parse_proto(dim), 1, 0))
        if size < 0:
            raise CheckpointError(f"tensor shape with unknown dimension ({size})")
        dims.append(size)
    return tuple(dims)


def _encode_shape(shape: tuple[int, ...]) -> bytes:
    return b"".join(_f_bytes(2, _f_varint(1, d) if d else b"") for d in shape)


# --------------------------------------------------------------------------------- V2 checkpoints


def _prefix(prefix: str | Path) -> str:
    p = str(prefix)
    return p[: -len(".index")] if p.endswith(".index") else p


def _shard_path(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read_v2_checkpoint(prefix: str | Path, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """Read every variable of a V2 checkpoint ``<prefix>.index`` + ``<prefix>.data-*``.

    Returns ``{name: array}`` (writable, native little-endian arrays). Raises
    :class:`CheckpointError` naming the variable on a checksum or size mismatch, an unsupported
    dtype (e.g. DT_STRING) or a partitioned (sliced) variable.
    """
    prefix = _prefix(prefix)
    entries = read_table(Path(prefix + ".index").read_bytes(), verify_crc=verify_crc)
    if not entries or entries[0][0] != b"":
        raise CheckpointError(f"{prefix}.index has no BundleHeaderProto (empty key)")
    header = parse_proto(entries[0][1])
    num_shards = _int64(_last(header, 1, 0))
    endianness = _last(header, 2, 0)
    if endianness not in (0, 1):
        raise CheckpointError(f"unknown bundle endianness {endianness}")
    if num_shards < 1 and len(entries) > 1:
        raise CheckpointError(f"bundle header says num_shards={num_shards}")
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for key, value in entries[1:]:
        name = key.decode("utf-8")
        e = parse_proto(value)
        if e.get(7):
            raise CheckpointError(f"variable {name!r} is partitioned (slices); not supported")
        dtype = _np_dtype(_last(e, 1, 0), name)
        if endianness == 1:
            dtype = dtype.newbyteorder(">")
        shape = _parse_shape(_last(e, 2))
        shard_id = _int64(_last(e, 3, 0))
        offset = _int64(_last(e, 4, 0))
        size = _int64(_last(e, 5, 0))
        if not 0 <= shard_id < num_shards:
            raise CheckpointError(f"variable {name!r}: shard {shard_id} of {num_shards}")
        if shard_id not in shards:
            shards[shard_id] = Path(_shard_path(prefix, shard_id, num_shards)).read_bytes()
        shard = shards[shard_id]
        count = int(np.prod(shape, dtype=np.int64))
        if size != count * dtype.itemsize:
            raise CheckpointError(
                f"variable {name!r}: {size} bytes stored for shape {shape} of {dtype}"
            )
        if offset < 0 or offset + size > len(shard):
            raise CheckpointError(
                f"variable {name!r}: bytes [{offset}, {offset + size}) lie outside shard "
                f"{shard_id} ({len(shard)} bytes)"
            )
        raw = shard[offset : offset + size]
        if verify_crc:
            stored = _last(e, 6, 0)
            if unmask_crc(stored) != crc32c(raw):
                raise CheckpointError(
                    f"variable {name!r}: crc32c mismatch (stored {unmask_crc(stored):#010x}, "
                    f"computed {crc32c(raw):#010x}); the checkpoint data is corrupted"
                )
        arr = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    return out


def write_v2_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as a single-shard little-endian V2 checkpoint (``.index`` + data)."""
    prefix = _prefix(prefix)
    data = bytearray()
    entries: list[tuple[bytes, bytes]] = []
    for name in sorted(tensors):
        if not name:
            raise CheckpointError("variable names must be non-empty")
        arr = np.asarray(tensors[name])
        code = _tf_dtype(arr, name)
        raw = np.ascontiguousarray(arr, dtype=_NP_DTYPES[code]).tobytes()
        entry = _f_varint(1, code) + _f_bytes(2, _encode_shape(arr.shape))
        if data:
            entry += _f_varint(4, len(data))
        if raw:
            entry += _f_varint(5, len(raw))
        entry += _f_fixed32(6, mask_crc(crc32c(raw)))
        entries.append((name.encode("utf-8"), entry))
        data += raw
    header = _f_varint(1, 1) + _f_bytes(3, _f_varint(1, 1))  # num_shards=1, version{producer=1}
    entries.append((b"", header))
    Path(prefix + ".index").write_bytes(write_table(entries))
    Path(_shard_path(prefix, 0, 1)).write_bytes(bytes(data))


# --------------------------------------------------------------------------------- V1 checkpoints


def _parse_slice(buf: bytes | None, shape: tuple[int, ...], name: str) -> tuple[slice, ...]:
    extents = _all(parse_proto(buf), 1) if buf else []
    if extents and len(extents) != len(shape):
        raise CheckpointError(f"variable {name!r}: slice rank {len(extents)} != shape {shape}")
    out = []
    for d, dim in enumerate(shape):
        if d >= len(extents):
            out.append(slice(0, dim))
            continue
        ext = parse_proto(extents[d])
        start = _int64(_last(ext, 1, 0))
        length = _last(ext, 2)
        stop = dim if length is None else start + _int64(length)
        if not 0 <= start <= stop <= dim:
            raise CheckpointError(f"variable {name!r}: slice [{start}, {stop}) outside dim {dim}")
        out.append(slice(start, stop))
    return tuple(out)


def _tensor_proto_values(tp: bytes, dtype: np.dtype, count: int, name: str) -> np.ndarray:
    f = parse_proto(tp)
    content = _last(f, 4)
    if content is not None:
        arr = np.frombuffer(content, dtype=dtype)
    elif dtype == np.float32:
        arr = np.array(_packed(f, 5, "fixed32"), dtype="<u4").view("<f4")
    elif dtype == np.float64:
        arr = np.array(_packed(f, 6, "fixed64"), dtype="<u8").view("<f8")
    elif dtype == np.int64:
        arr = np.array([_int64(v) for v in _packed(f, 10, "varint")], dtype=np.int64)
    elif dtype == np.bool_:
        arr = np.array([bool(v) for v in _packed(f, 11, "varint")], dtype=np.bool_)
    elif dtype == np.float16:
        arr = np.array(_packed(f, 13, "varint"), dtype="<u2").view("<f2")
    else:  # int32, int16, int8, uint8 all use int_val
        arr = np.array([_int64(v) for v in _packed(f, 7, "varint")], dtype=np.int64).astype(dtype)
    if arr.size == 1 and count > 1:  # TensorProto convention: one value fills the tensor
        arr = np.full(count, arr[0], dtype=dtype)
    if arr.size != count:
        raise CheckpointError(f"variable {name!r}: slice holds {arr.size} values, expected {count}")
    return arr


def read_v1_checkpoint(data: bytes, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """Read a V1 TensorSlice checkpoint file (its bytes) into ``{name: array}``.

    Variables saved as several slices are assembled; a variable whose slices do not cover it
    entirely raises :class:`CheckpointError`.
    """
    entries = read_table(data, verify_crc=verify_crc)
    if not entries or entries[0][0] != b"":
        raise CheckpointError("V1 checkpoint has no SavedTensorSliceMeta (empty key)")
    meta = _last(parse_proto(entries[0][1]), 1)
    if meta is None:
        raise CheckpointError("V1 checkpoint: key '' holds no meta")
    specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for tm in _all(parse_proto(meta), 1):
        f = parse_proto(tm)
        name = _last(f, 1, b"").decode("utf-8")
        specs[name] = (_parse_shape(_last(f, 2)), _np_dtype(_last(f, 3, 0), name))
    out = {n: np.zeros(shape, dtype=dt) for n, (shape, dt) in specs.items()}
    covered = {n: 0 for n in specs}
    for key, value in entries[1:]:
        saved = _last(parse_proto(value), 2)
        if saved is None:
            raise CheckpointError(f"V1 checkpoint entry {key!r} holds no SavedSlice")
        f = parse_proto(saved)
        name = _last(f, 1, b"").decode("utf-8")
        if name not in specs:
            raise CheckpointError(f"V1 checkpoint: slice of {name!r}, which the meta does not list")
        shape, dtype = specs[name]
        sl = _parse_slice(_last(f, 2), shape, name)
        sub_shape = tuple(s.stop - s.start for s in sl)
        count = int(np.prod(sub_shape, dtype=np.int64))
        values = _tensor_proto_values(_last(f, 3, b""), dtype, count, name)
        out[name][sl] = values.reshape(sub_shape)
        covered[name] += count
    for name, (shape, _) in specs.items():
        total = int(np.prod(shape, dtype=np.int64))
        if covered[name] != total:
            raise CheckpointError(
                f"variable {name!r}: slices cover {covered[name]} of {total} elements"
            )
    return out


def _ordered_string(s: bytes) -> bytes:
    return s.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _ordered_num(n: int) -> bytes:
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return bytes([len(body)]) + body


def _v1_key(name: str, rank: int) -> bytes:
    # OrderedCode: NumIncreasing(0), String(name), NumIncreasing(rank), then per dimension
    # SignedNumIncreasing(start=0) = 0x80 and SignedNumIncreasing(length=-1, "full") = 0x7f
    # (the one-byte form for small signed values). Readers ignore the key; it only orders entries.
    return b"\x00" + _ordered_string(name.encode("utf-8")) + _ordered_num(rank) + b"\x80\x7f" * rank


def _tensor_proto(arr: np.ndarray, code: int) -> bytes:
    flat = arr.reshape(-1)
    if code == DT_FLOAT:
        payload = flat.astype("<f4").tobytes()
        return _f_bytes(5, payload) if payload else b""
    if code == DT_DOUBLE:
        payload = flat.astype("<f8").tobytes()
        return _f_bytes(6, payload) if payload else b""
    if code == DT_HALF:
        vals = flat.astype("<f2").view("<u2")
        number = 13
    elif code == DT_INT64:
        vals, number = flat, 10
    elif code == DT_BOOL:
        vals, number = flat.astype(np.int64), 11
    else:
        vals, number = flat, 7
    payload = b"".join(encode_varint(int(v)) for v in vals)
    return _f_bytes(number, payload) if payload else b""


def write_v1_checkpoint(tensors: dict[str, np.ndarray]) -> bytes:
    """Serialize ``tensors`` as a V1 TensorSlice checkpoint (one full slice per variable)."""
    metas = b""
    entries: list[tuple[bytes, bytes]] = []
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        code = _tf_dtype(arr, name)
        full_slice = b"".join(_f_bytes(1, b"") for _ in arr.shape)
        metas += _f_bytes(
            1,
            _f_bytes(1, name.encode("utf-8"))
            + _f_bytes(2, _encode_shape(arr.shape))
            + _f_varint(3, code)
            + _f_bytes(4, full_slice),
        )
        saved = (
            _f_bytes(1, name.encode("utf-8"))
            + _f_bytes(2, full_slice)
            + _f_bytes(3, _tensor_proto(arr, code))
        )
        entries.append((_v1_key(name, arr.ndim), _f_bytes(2, saved)))
    metas += _f_bytes(2, _f_varint(1, 1))  # versions { producer: 1 }
    entries.append((b"", _f_bytes(1, metas)))
    return write_table(entries)


# ------------------------------------------------------------------------------------ .mag bundle


def read_mag_bundle(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a Magenta ``.mag`` (GeneratorBundle holding one V1 checkpoint file).

    Returns ``(tensors, details)`` with details ``{"id", "description", "bundle_description",
    "metagraph_size"}``.
    """
    from note_seq.protobuf import generator_pb2

    bundle = generator_pb2.GeneratorBundle()
    try:
        bundle.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise CheckpointError(f"{path}: not a GeneratorBundle ({exc})") from exc
    if len(bundle.checkpoint_file) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one checkpoint file, found {len(bundle.checkpoint_file)}"
        )
    tensors = read_v1_checkpoint(bundle.checkpoint_file[0])
    details = {
        "id": bundle.generator_details.id,
        "description": bundle.generator_details.description,
        "bundle_description": bundle.bundle_details.description,
        "metagraph_size": len(bundle.metagraph_file),
    }
    return tensors, details


def write_mag_bundle(
    path: str | Path,
    tensors: dict[str, np.ndarray],
    generator_id: str,
    description: str = "",
    bundle_description: str = "",
    metagraph: bytes = b"",
) -> None:
    from note_seq.protobuf import generator_pb2

    bundle = generator_pb2.GeneratorBundle()
    bundle.generator_details.id = generator_id
    bundle.generator_details.description = description
    bundle.bundle_details.description = bundle_description
    bundle.checkpoint_file.append(write_v1_checkpoint(tensors))
    bundle.metagraph_file = metagraph
    Path(path).write_bytes(bundle.SerializeToString())

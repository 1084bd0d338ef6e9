"""TF checkpoint reading without TensorFlow: tables, V2 bundles, V1 TensorSlice files, .mag."""

from __future__ import annotations

import struct

import google_crc32c
import numpy as np
import pytest

from trance_assets.models import tf_checkpoint as tc


def _masked(data: bytes) -> int:
    """Independent restatement of the LevelDB/TFRecord masked crc32c."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------ varint / proto


@pytest.mark.parametrize(
    "value, encoded",
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
     (2**32, b"\x80\x80\x80\x80\x10"), (-1, b"\xff" * 9 + b"\x01")],
)
def test_varint_hand_cases(value, encoded):
    assert tc.encode_varint(value) == encoded
    decoded, pos = tc.decode_varint(encoded + b"junk")
    assert pos == len(encoded)
    assert decoded == (value if value >= 0 else value + 2**64)


def test_varint_truncated_and_overlong():
    with pytest.raises(tc.CheckpointError, match="truncated"):
        tc.decode_varint(b"\x80\x80")
    with pytest.raises(tc.CheckpointError, match="longer"):
        tc.decode_varint(b"\x80" * 11)


def test_proto_fields_hand_case():
    # field 1 varint 150; field 2 string "hi"; field 6 fixed32 0xdeadbeef; field 3 fixed64 5;
    # field 5 packed varints [3, 270]
    msg = (b"\x08\x96\x01" + b"\x12\x02hi" + b"\x35\xef\xbe\xad\xde"
           + b"\x19" + struct.pack("<Q", 5) + b"\x2a\x03\x03\x8e\x02")
    assert list(tc.iter_proto_fields(msg)) == [
        (1, 0, 150), (2, 2, b"hi"), (6, 5, 0xDEADBEEF), (3, 1, 5), (5, 2, b"\x03\x8e\x02")]
    fields = tc.parse_proto(msg)
    assert tc._packed(fields, 5, "varint") == [3, 270]
    with pytest.raises(tc.CheckpointError, match="overruns"):
        list(tc.iter_proto_fields(b"\x12\x05ab"))
    with pytest.raises(tc.CheckpointError, match="wire type"):
        list(tc.iter_proto_fields(b"\x0b"))


def test_crc_mask_round_trip():
    for crc in (0, 1, 0xFFFFFFFF, google_crc32c.value(b"hello")):
        assert tc.unmask_crc(tc.mask_crc(crc)) == crc
    assert tc.mask_crc(google_crc32c.value(b"abc")) == _masked(b"abc")


# ------------------------------------------------------------------------------------- tables


def _entries(n: int) -> list[tuple[bytes, bytes]]:
    # Long shared prefixes exercise prefix compression; values vary in length.
    return [(f"rnn/multi_rnn_cell/cell_{i // 50}/var_{i:05d}".encode(), bytes([i % 251]) * (i % 37))
            for i in range(n)]


def test_table_round_trip_many_blocks_and_restarts():
    entries = _entries(1000)
    data = tc.write_table(entries, block_size=512, restart_interval=16)
    assert struct.unpack("<Q", data[-8:])[0] == 0xDB4775248B80FB57
    assert tc.read_table(data) == sorted(entries)
    # Several data blocks: the index block has one entry per data block.
    _, (i_off, i_size) = tc._read_footer(data)
    index = list(tc._iter_block(tc._read_block(data, i_off, i_size, "index"), "index"))
    assert len(index) > 10
    # Prefix compression is effective: far fewer bytes than the raw keys.
    assert len(data) < sum(len(k) + len(v) for k, v in entries)


@pytest.mark.parametrize("interval", [1, 2, 16, 1000])
def test_table_restart_intervals(interval):
    entries = _entries(120)
    data = tc.write_table(entries, block_size=10**6, restart_interval=interval)
    assert tc.read_table(data) == entries
    _, (i_off, i_size) = tc._read_footer(data)
    (_, handle), = tc._iter_block(tc._read_block(data, i_off, i_size, "index"), "index")
    off, size, _ = tc._decode_handle(handle)
    block = tc._read_block(data, off, size, "data")
    num_restarts = struct.unpack("<I", block[-4:])[0]
    assert num_restarts == -(-120 // interval)


def test_table_restart_point_with_shared_bytes_is_rejected():
    # One block, two entries, restart array claims both are restart points, but entry 2 shares.
    body = b"\x00\x02\x00ab" + b"\x01\x01\x00c"
    block = body + struct.pack("<III", 0, 5, 2)
    with pytest.raises(tc.CheckpointError, match="restart point 5 shares 1"):
        list(tc._iter_block(block, "test"))


def test_empty_table():
    assert tc.read_table(tc.write_table([])) == []


def test_corrupted_block_crc_names_offset():
    entries = _entries(300)
    data = bytearray(tc.write_table(entries, block_size=256))
    index = tc.read_table(bytes(data))  # sanity
    assert len(index) == 300
    # Find the second data block and flip a byte inside it.
    _, (i_off, i_size) = tc._read_footer(bytes(data))
    handles = [tc._decode_handle(h) for _, h in
               tc._iter_block(tc._read_block(bytes(data), i_off, i_size, "index"), "index")]
    off, size, _ = handles[1]
    data[off + size // 2] ^= 0xFF
    with pytest.raises(tc.CheckpointError, match=f"CRC mismatch in data block at offset {off}"):
        tc.read_table(bytes(data))


def test_wrong_magic_and_short_file():
    data = bytearray(tc.write_table(_entries(5)))
    data[-1] ^= 0x01
    with pytest.raises(tc.CheckpointError, match="magic"):
        tc.read_table(bytes(data))
    with pytest.raises(tc.CheckpointError, match="too short"):
        tc.read_table(b"\x00" * 10)


def test_compressed_block_is_rejected_clearly():
    data = bytearray(tc.write_table([(b"k", b"v")]))
    # The first data block starts at 0; its type byte follows the block contents.
    _, (i_off, i_size) = tc._read_footer(bytes(data))
    (_, handle), = tc._iter_block(tc._read_block(bytes(data), i_off, i_size, "index"), "index")
    off, size, _ = tc._decode_handle(handle)
    data[off + size] = 1
    crc = _masked(bytes(data[off:off + size + 1]))
    data[off + size + 1: off + size + 5] = struct.pack("<I", crc)
    with pytest.raises(tc.CheckpointError, match="compression type 1 \\(snappy\\)"):
        tc.read_table(bytes(data))


def test_duplicate_keys_rejected_by_writer():
    with pytest.raises(tc.CheckpointError, match="duplicate"):
        tc.write_table([(b"a", b"1"), (b"a", b"2")])


# ------------------------------------------------------------------------------ V2 checkpoints

NAMES = {
    "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/kernel": np.arange(6 * 4, dtype=np.float32)
    .reshape(6, 4) / 7,
    "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/attention/attn_w":
        np.random.default_rng(0).standard_normal((1, 1, 3, 3)).astype(np.float32),
    "global_step": np.array(123456789012, dtype=np.int64),
    "scalar_float": np.array(-2.5, dtype=np.float32),
    "flags": np.array([True, False, True], dtype=bool),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "ints": np.array([[-1, 2**40], [0, -(2**62)]], dtype=np.int64),
    "i32": np.array([-7, 7], dtype=np.int32),
    "f64": np.array([1e-300, np.pi]),
}


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr, err_msg=name)


def test_v2_round_trip(tmp_path):
    prefix = tmp_path / "model.ckpt-100"
    tc.write_v2_checkpoint(prefix, NAMES)
    assert (tmp_path / "model.ckpt-100.index").exists()
    assert (tmp_path / "model.ckpt-100.data-00000-of-00001").exists()
    got = tc.read_v2_checkpoint(prefix)
    _assert_same(got, NAMES)
    assert got["global_step"].shape == ()
    assert got["empty"].shape == (0, 5)
    got["flags"][0] = False  # arrays are writable copies
    # Passing the .index path works too.
    _assert_same(tc.read_v2_checkpoint(str(prefix) + ".index"), NAMES)


def test_v2_many_variables_span_several_index_blocks(tmp_path):
    tensors = {f"decoder/cell_{i}/lstm_cell/kernel": np.full((2, i % 4), i, np.float32)
               for i in range(400)}
    tc.write_v2_checkpoint(tmp_path / "m", tensors)
    _assert_same(tc.read_v2_checkpoint(tmp_path / "m"), tensors)


def test_v2_corrupted_tensor_byte_names_variable(tmp_path):
    prefix = tmp_path / "ckpt"
    tc.write_v2_checkpoint(prefix, NAMES)
    data_path = tmp_path / "ckpt.data-00000-of-00001"
    data = bytearray(data_path.read_bytes())
    # The kernel's bytes: locate them through the index entry.
    entries = dict(tc.read_table((tmp_path / "ckpt.index").read_bytes()))
    name = "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/kernel"
    e = tc.parse_proto(entries[name.encode()])
    offset = tc._last(e, 4, 0)
    data[offset + 5] ^= 0x10
    data_path.write_bytes(bytes(data))
    with pytest.raises(tc.CheckpointError, match=f"variable '{name}': crc32c mismatch"):
        tc.read_v2_checkpoint(prefix)
    assert tc.read_v2_checkpoint(prefix, verify_crc=False)[name].shape == (6, 4)


def test_v2_missing_shard_and_unsupported_dtype(tmp_path):
    prefix = tmp_path / "ckpt"
    tc.write_v2_checkpoint(prefix, {"a": np.ones(2, np.float32)})
    (tmp_path / "ckpt.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError):
        tc.read_v2_checkpoint(prefix)
    # A DT_STRING entry (dtype 7) is reported by name.
    entry = b"\x08\x07" + b"\x12\x00" + b"\x35" + struct.pack("<I", _masked(b""))
    header = b"\x08\x01"
    (tmp_path / "s.index").write_bytes(tc.write_table([(b"", header), (b"names", entry)]))
    (tmp_path / "s.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(tc.CheckpointError, match="'names': unsupported TF dtype enum 7"):
        tc.read_v2_checkpoint(tmp_path / "s")


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A block with every entry at restart point 0 only, keys prefix-compressed — by hand."""
    out, prev = b"", b""
    for key, value in entries:
        shared = 0
        while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
            shared += 1
        out += bytes([shared, len(key) - shared, len(value)]) + key[shared:] + value
        prev = key
    return out + struct.pack("<II", 0, 1)


def test_hand_built_v2_bundle_bytes(tmp_path):
    """The exact bytes of a tiny V2 checkpoint, built from the documented format only.

    Layout as TensorFlow writes it for `step = 7` (int64) and `w = [1.0, 2.0]` (float32), added
    in that order: data shard = i64 LE 7 then f32 LE 1.0, 2.0; index table = one data block holding
    "" -> BundleHeaderProto{num_shards: 1, version{producer: 1}},
    "step" -> BundleEntryProto{dtype: DT_INT64, shape{}, size: 8, crc32c: masked} (offset 0 and
    shard 0 are proto3 defaults, so absent),
    "w" -> BundleEntryProto{dtype: DT_FLOAT, shape{dim{size: 2}}, offset: 8, size: 8, crc32c};
    an empty metaindex block; an index block whose key is a LevelDB short successor ("x") rather
    than the last key; the 48-byte footer.
    """
    w = struct.pack("<2f", 1.0, 2.0)
    step = struct.pack("<q", 7)
    (tmp_path / "tiny.data-00000-of-00001").write_bytes(step + w)
    header = bytes([0x08, 0x01, 0x1A, 0x02, 0x08, 0x01])
    e_step = (bytes([0x08, 0x09, 0x12, 0x00, 0x28, 0x08, 0x35])
              + struct.pack("<I", _masked(step)))
    e_w = (bytes([0x08, 0x01, 0x12, 0x04, 0x12, 0x02, 0x08, 0x02, 0x20, 0x08, 0x28, 0x08, 0x35])
           + struct.pack("<I", _masked(w)))
    data_block = _block([(b"", header), (b"step", e_step), (b"w", e_w)])
    meta_block = struct.pack("<II", 0, 1)
    f = b""
    handles = []
    for blk in (data_block, meta_block):
        handles.append((len(f), len(blk)))
        f += blk + b"\x00" + struct.pack("<I", _masked(blk + b"\x00"))
    index_block = _block([(b"x", bytes([handles[0][0], handles[0][1]]))])
    handles.append((len(f), len(index_block)))
    f += index_block + b"\x00" + struct.pack("<I", _masked(index_block + b"\x00"))
    footer = bytes([handles[1][0], handles[1][1], handles[2][0], handles[2][1]])
    footer += b"\x00" * (40 - len(footer)) + bytes.fromhex("57fb808b247547db")
    f += footer
    (tmp_path / "tiny.index").write_bytes(f)

    assert tc.read_table(f) == [(b"", header), (b"step", e_step), (b"w", e_w)]
    got = tc.read_v2_checkpoint(tmp_path / "tiny")
    assert got["w"].dtype == np.float32 and got["w"].tolist() == [1.0, 2.0]
    assert got["step"].dtype == np.int64 and got["step"].shape == () and int(got["step"]) == 7

    # Our writer produces the same data shard and the same index entries for these tensors.
    tc.write_v2_checkpoint(tmp_path / "ours", {"w": np.array([1, 2], np.float32),
                                              "step": np.array(7, np.int64)})
    assert (tmp_path / "ours.data-00000-of-00001").read_bytes() == step + w
    ours = tc.read_table((tmp_path / "ours.index").read_bytes())
    assert ours == [(b"", header), (b"step", e_step), (b"w", e_w)]


def test_v2_big_endian_bundle(tmp_path):
    raw = struct.pack(">2f", 1.5, -3.0)
    entry = b"\x08\x01\x12\x04\x12\x02\x08\x02\x28\x08\x35" + struct.pack("<I", _masked(raw))
    header = b"\x08\x01\x10\x01"  # num_shards 1, endianness BIG
    (tmp_path / "be.index").write_bytes(tc.write_table([(b"", header), (b"v", entry)]))
    (tmp_path / "be.data-00000-of-00001").write_bytes(raw)
    got = tc.read_v2_checkpoint(tmp_path / "be")["v"]
    assert got.tolist() == [1.5, -3.0] and got.dtype.isnative


# ------------------------------------------------------------------------------- V1 and .mag


def test_v1_round_trip():
    data = tc.write_v1_checkpoint(NAMES)
    _assert_same(tc.read_v1_checkpoint(data), NAMES)


def test_v1_key_encoding_sorts_meta_first():
    entries = tc.read_table(tc.write_v1_checkpoint({"a\x00b": np.ones(1, np.float32),
                                                    "z": np.ones((2, 2), np.float32)}))
    assert entries[0][0] == b""
    assert entries[1][0] == b"\x00" + b"a\x00\xffb\x00\x01" + b"\x01\x01" + b"\x80\x7f"
    assert entries[2][0] == b"\x00z\x00\x01\x01\x02" + b"\x80\x7f" * 2


def test_v1_partitioned_variable_is_assembled():
    """A variable saved as two row slices (as a partitioned Saver writes it)."""
    full = np.arange(12, dtype=np.float32).reshape(4, 3)

    def field(n, payload):
        return tc._f_bytes(n, payload)

    shape = tc._encode_shape((4, 3))
    rows = [(0, 1), (1, 3)]  # rows [0, 1) and [1, 4)
    slices = [field(1, tc._f_varint(1, s) + tc._f_varint(2, n) if s else tc._f_varint(2, n))
              + field(1, b"") for s, n in rows]
    meta = field(1, field(1, b"v") + field(2, shape) + tc._f_varint(3, 1)
                 + b"".join(field(4, s) for s in slices))
    entries = [(b"", field(1, meta))]
    for (s, n), sl in zip(rows, slices):
        values = full[s:s + n].astype("<f4").tobytes()
        saved = field(1, b"v") + field(2, sl) + field(3, field(5, values))
        entries.append((b"k%d" % s, field(2, saved)))
    got = tc.read_v1_checkpoint(tc.write_table(entries))
    np.testing.assert_array_equal(got["v"], full)
    # Dropping a slice leaves the variable incomplete: a clear error.
    with pytest.raises(tc.CheckpointError, match="'v': slices cover 3 of 12"):
        tc.read_v1_checkpoint(tc.write_table(entries[:2]))


def test_v1_unpacked_float_values_and_fill():
    meta = tc._f_bytes(1, tc._f_bytes(1, b"c") + tc._f_bytes(2, tc._encode_shape((3,)))
                       + tc._f_varint(3, 1))
    one = tc._f_bytes(1, b"c") + tc._f_bytes(3, tc._field(5, 5, struct.pack("<f", 0.25)))
    got = tc.read_v1_checkpoint(tc.write_table([(b"", tc._f_bytes(1, meta)),
                                                (b"k", tc._f_bytes(2, one))]))
    assert got["c"].tolist() == [0.25, 0.25, 0.25]


def test_mag_bundle_round_trip(tmp_path):
    from note_seq.protobuf import generator_pb2

    path = tmp_path / "attention_rnn.mag"
    tc.write_mag_bundle(path, NAMES, "attention_rnn", "Melody RNN with attention.",
                        metagraph=b"\x0a\x00")
    tensors, details = tc.read_mag_bundle(path)
    _assert_same(tensors, NAMES)
    assert details == {"id": "attention_rnn", "description": "Melody RNN with attention.",
                       "bundle_description": "", "metagraph_size": 2}
    bundle = generator_pb2.GeneratorBundle()
    bundle.ParseFromString(path.read_bytes())
    bundle.checkpoint_file.append(b"second")
    path.write_bytes(bundle.SerializeToString())
    with pytest.raises(tc.CheckpointError, match="exactly one checkpoint file"):
        tc.read_mag_bundle(path)

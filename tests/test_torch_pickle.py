"""torch .pt files without torch: torch.save'd state dicts and checkpoints, our writer, malicious and corrupt files."""

import os
import pickle
import struct
import zipfile
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from conftest import needs_torch, torch

from jaxinterp.errors import JaxinterpError
from jaxinterp.weights.torch_pickle import _int, read_torch_file, write_torch_file


def _sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "f64": rng.normal(size=(5,)),
        "f16": rng.normal(size=(2, 3)).astype(np.float16),
        "bf16": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
        "f8": rng.normal(size=(3,)).astype(ml_dtypes.float8_e4m3fn),
        "c64": (rng.normal(size=3) + 1j * rng.normal(size=3)).astype(np.complex64),
        "i64": np.array([-(2**62), 0, 2**40], dtype=np.int64),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "u8": np.arange(300, dtype=np.uint8),
        "u16": np.array([1, 65535], dtype=np.uint16),
        "bool": np.array([True, False, True]),
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big_endian": np.arange(3, dtype=">f4"),
    }


def _torch_zip(path, pickle_bytes: bytes, records: dict[str, bytes] | None = None) -> None:
    """A zip laid out like torch.save's around a hand-made pickle."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/byteorder", b"little")
        for name, data in (records or {}).items():
            zf.writestr(f"archive/{name}", data)
        zf.writestr("archive/version", b"3\n")


def _rewrite(src, dst, edit: Callable[[str, bytes], bytes | None]) -> None:
    """Copy a zip, passing every record through ``edit`` (None drops the record)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _tensor_pickle(size: tuple, stride: tuple, offset: int, numel: int) -> bytes:
    """A protocol-2 pickle of {"t": tensor} over storage "0", with the given geometry."""

    def tup(items):
        return pickle.MARK + b"".join(items) + pickle.TUPLE

    def s(text):
        return pickle.BINUNICODE + struct.pack("<I", len(text)) + text.encode()

    storage = tup([s("storage"), b"ctorch\nFloatStorage\n", s("0"), s("cpu"), _int(numel)]) + pickle.BINPERSID
    args = [
        storage,
        _int(offset),
        tup([_int(n) for n in size]),
        tup([_int(n) for n in stride]),
        pickle.NEWFALSE,
    ]
    args.append(b"ccollections\nOrderedDict\n)R")
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n" + tup(args) + pickle.REDUCE
    return b"\x80\x02}" + s("t") + tensor + pickle.SETITEM + pickle.STOP


def _assert_refused(path, *words) -> str:
    with pytest.raises(JaxinterpError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


class _Pwn:
    """Pickles as a call to os.system that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# --- without torch ---------------------------------------------------------------------------------------------


def test_writer_round_trips_exactly_through_reader(tmp_path):
    sd = _sample()
    write_torch_file(tmp_path / "m.pt", sd)
    back = read_torch_file(tmp_path / "m.pt")
    assert list(back) == list(sd)
    for key, want in sd.items():
        assert back[key].dtype == want.dtype.newbyteorder("=") and back[key].shape == want.shape, key
        np.testing.assert_array_equal(back[key], want, err_msg=key)


def test_writer_lays_out_the_zip_like_torch(tmp_path):
    write_torch_file(tmp_path / "agent.pth", {"a": np.ones(3, np.float32), "b": np.zeros(2, np.int64)})
    raw = (tmp_path / "agent.pth").read_bytes()
    with zipfile.ZipFile(tmp_path / "agent.pth") as zf:
        names = zf.namelist()
        assert names == ["agent/data.pkl", "agent/byteorder", "agent/data/0", "agent/data/1", "agent/version"]
        assert zf.read("agent/version") == b"3\n" and zf.read("agent/byteorder") == b"little"
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
        assert zf.read("agent/data/0") == np.ones(3, np.float32).tobytes()


@pytest.mark.parametrize("value", [0, 255, 256, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**70, -(2**70)])
def test_int_opcodes_unpickle_to_their_value(value):
    assert pickle.loads(_int(value) + pickle.STOP) == value


def test_writer_rejects_what_torch_cannot_hold(tmp_path):
    with pytest.raises(JaxinterpError, match="'names'"):
        write_torch_file(tmp_path / "m.pt", {"names": np.array(["a", "b"])})
    assert not (tmp_path / "m.pt").exists()


def test_reads_strided_offset_views_and_big_endian_files(tmp_path):
    base = np.arange(12, dtype=np.float32)
    _torch_zip(tmp_path / "v.pt", _tensor_pickle((3, 2), (4, 2), 1, 12), {"data/0": base.tobytes()})
    np.testing.assert_array_equal(read_torch_file(tmp_path / "v.pt")["t"], [[1, 3], [5, 7], [9, 11]])

    sd = {
        "f": np.arange(4, dtype=np.float32),
        "c": np.array([1 + 2j], np.complex64),
        "bf": np.ones(2, ml_dtypes.bfloat16),
    }
    write_torch_file(tmp_path / "l.pt", sd)

    def to_big(name, data):
        if name.endswith("byteorder"):
            return b"big"
        if "/data/" in name:
            key = name.rsplit("/", 1)[1]
            return list(sd.values())[int(key)].byteswap().tobytes()
        return data

    _rewrite(tmp_path / "l.pt", tmp_path / "b.pt", to_big)
    for key, value in read_torch_file(tmp_path / "b.pt").items():
        np.testing.assert_array_equal(value, sd[key])


@pytest.mark.parametrize("wrap", ["zip", "legacy", "plain"])
def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path, wrap):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Pwn(marker)}, protocol=2)
    path = tmp_path / "model.pt"
    if wrap == "zip":
        _torch_zip(path, payload)
    elif wrap == "legacy":  # torch<1.6 layout: magic, protocol, system info, then the object
        header = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}]
        path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in header) + payload)
    else:
        path.write_bytes(payload)
    words = (
        (f"{os.system.__module__}.system", "only plain state dicts")
        if wrap != "plain"
        else ("not a torch file",)
    )
    _assert_refused(path, *words)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload,words",
    [
        (b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.", ("builtins.eval",)),
        # a storage type is allowed as a name, but not as something to call
        (b"\x80\x02ctorch\nFloatStorage\n)R.", ("calls torch.FloatStorage",)),
        # BUILD on an allowed global would set attributes on our stand-in
        (
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b.",
            ("sets the state of torch._utils._rebuild_tensor_v2",),
        ),
        # a persistent id that is not a storage record
        (b"\x80\x02(X\x06\x00\x00\x00moduleK\x01K\x02K\x03tQ.", ("persistent object of kind 'module'",)),
    ],
)
def test_pickle_outside_the_allow_list_is_refused(tmp_path, payload, words):
    _torch_zip(tmp_path / "m.pt", payload)
    _assert_refused(tmp_path / "m.pt", "refusing to load", *words)


def _drop_storage(name, data):
    return None if name.endswith("data/0") else data


def _short_storage(name, data):
    return data[:-3] if name.endswith("data/0") else data


@pytest.mark.parametrize(
    "make",
    [
        lambda p, good: p.write_bytes(b""),
        lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(5000)),
        lambda p, good: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]),
        lambda p, good: _rewrite(good, p, lambda n, d: None if n.endswith("data.pkl") else d),
        lambda p, good: _rewrite(good, p, _drop_storage),
        lambda p, good: _rewrite(good, p, _short_storage),
        lambda p, good: _rewrite(good, p, lambda n, d: d[:-5] if n.endswith("data.pkl") else d),
        lambda p, good: _torch_zip(p, _tensor_pickle((3, 2), (4, 2), 4, 12), {"data/0": bytes(48)}),
        lambda p, good: _torch_zip(p, _tensor_pickle((3,), (1,), 0, 3), {"data/0": bytes(11)}),
        lambda p, good: _torch_zip(p, pickle.dumps([1, 2], protocol=2)),
    ],
    ids=[
        "empty",
        "random",
        "truncated",
        "no-data.pkl",
        "no-storage",
        "short-storage",
        "short-pickle",
        "stride-past-end",
        "storage-short-of-numel",
        "not-a-dict",
    ],
)
def test_corrupt_files_are_one_line_errors(tmp_path, make):
    good = tmp_path / "good.pt"
    write_torch_file(good, {"w": np.arange(6, dtype=np.float32), "b": np.ones(2, np.float32)})
    make(tmp_path / "bad.pt", good)
    _assert_refused(tmp_path / "bad.pt")


def test_missing_file_is_a_one_line_error(tmp_path):
    _assert_refused(tmp_path / "nope.pt", "cannot read")


def test_checkpoint_without_a_state_dict_lists_its_keys(tmp_path):
    _torch_zip(tmp_path / "c.pt", pickle.dumps({"epoch": 3, "notes": "hi"}, protocol=2))
    _assert_refused(tmp_path / "c.pt", "'epoch'", "'notes'", "model_state_dict")


# --- against torch ---------------------------------------------------------------------------------------------


def _as_numpy(t: "torch.Tensor") -> np.ndarray:
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return t.numpy()


def _assert_same(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key, t in theirs.items():
        want = _as_numpy(t)
        assert ours[key].dtype == want.dtype and ours[key].shape == want.shape, key
        np.testing.assert_array_equal(ours[key], want, err_msg=key)


def _torch_sample() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=g)
    c = torch.complex(torch.randn(3, generator=g), torch.randn(3, generator=g))
    return {
        "base": base,
        "column": base[:, 1],  # strided view sharing base's storage
        "rows": base[1:3],  # offset view
        "transposed": base.t(),
        "every_other": base[::2, ::2],
        "expanded": torch.arange(3.0).expand(2, 3),  # stride 0
        "f64": torch.randn(3, dtype=torch.float64, generator=g),
        "f16": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16()[:, 1:],
        "f8": torch.randn(4, generator=g).to(torch.float8_e4m3fn),
        "i64": torch.tensor([-(2**62), 5]),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-3, 3], dtype=torch.int16),
        "i8": torch.tensor([-3, 3], dtype=torch.int8),
        "u8": torch.arange(10, dtype=torch.uint8),
        "u16": torch.tensor([1, 65535], dtype=torch.int32).to(torch.uint16),
        "bool": torch.tensor([True, False]),
        "conj": c.conj(),  # saved with a lazy conjugation flag
        "neg": base[0]._neg_view(),  # saved with a lazy negation flag
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.ones(2)),
    }


@needs_torch
def test_reads_torch_saved_state_dicts(tmp_path):
    sd = _torch_sample()
    torch.save(sd, tmp_path / "m.pt")
    _assert_same(read_torch_file(tmp_path / "m.pt"), sd)


@needs_torch
def test_reads_torch_legacy_format(tmp_path):
    sd = {k: _torch_sample()[k] for k in ("base", "column", "rows", "bf16", "i64", "scalar", "param")}
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    _assert_same(read_torch_file(tmp_path / "old.pt"), sd)


@needs_torch
def test_reads_module_state_dict_and_wrapped_checkpoints(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.randn(1, 3, 8, 8)).sum().backward()
    opt = torch.optim.Adam(net.parameters())
    opt.step()
    sd = net.state_dict()  # an OrderedDict carrying _metadata, which the pickle restores with BUILD
    torch.save(sd, tmp_path / "sd.pt")
    _assert_same(read_torch_file(tmp_path / "sd.pt"), sd)

    ckpt = {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "loss": 0.5}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    _assert_same(read_torch_file(tmp_path / "ckpt.pt"), sd)

    torch.save({"step": 10, "model": {"actor": sd, "critic": {"v": torch.ones(1)}}}, tmp_path / "nested.pt")
    flat = {f"actor.{k}": v for k, v in sd.items()} | {"critic.v": torch.ones(1)}
    _assert_same(read_torch_file(tmp_path / "nested.pt"), flat)

    # no wrapper key: the whole tree when all its leaves are tensors; a wrapper key wins over that
    torch.save({"actor": sd, "critic": {"v": torch.ones(1)}}, tmp_path / "tree.pt")
    _assert_same(read_torch_file(tmp_path / "tree.pt"), flat)
    torch.save({"target": {"v": torch.ones(1)}, "policy": sd}, tmp_path / "policy.pt")
    _assert_same(read_torch_file(tmp_path / "policy.pt"), sd)


@needs_torch
def test_torch_saved_malicious_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "x": _Pwn(marker)}, tmp_path / "evil.pt")
    _assert_refused(tmp_path / "evil.pt", f"{os.system.__module__}.system")
    assert not marker.exists()


@needs_torch
@pytest.mark.parametrize("mmap", [False, True])
def test_writer_output_loads_in_torch_weights_only(tmp_path, mmap):
    sd = _sample()
    write_torch_file(tmp_path / "ours.pt", sd)
    loaded = torch.load(tmp_path / "ours.pt", weights_only=True, mmap=mmap)
    _assert_same({k: v.astype(v.dtype.newbyteorder("=")) for k, v in sd.items()}, loaded)

    # and back: torch's file through our reader, our writer, and torch again
    ref = _torch_sample()
    torch.save(ref, tmp_path / "ref.pt")
    write_torch_file(tmp_path / "again.pt", read_torch_file(tmp_path / "ref.pt"))
    _assert_same(
        {k: _as_numpy(v) for k, v in ref.items()}, torch.load(tmp_path / "again.pt", weights_only=True)
    )

"""Read and write PyTorch ``.pt``/``.pth`` state dicts without torch, never running code from the file.

The pickle inside is read by an unpickler that only knows a short allow-list of tensor-record globals.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike

from jaxinterp.atomic import atomic_path
from jaxinterp.errors import JaxinterpError

__all__ = ["read_torch_file", "write_torch_file"]

# (torch dtype name, the legacy storage class that holds it or None, numpy dtype). Dtypes without a legacy
# storage class are saved by torch as raw bytes (UntypedStorage) with ``_rebuild_tensor_v3`` naming the dtype.
_DTYPES: list[tuple[str, str | None, np.dtype]] = [
    ("float32", "FloatStorage", np.dtype(np.float32)),
    ("float64", "DoubleStorage", np.dtype(np.float64)),
    ("float16", "HalfStorage", np.dtype(np.float16)),
    ("bfloat16", "BFloat16Storage", np.dtype(ml_dtypes.bfloat16)),
    ("complex64", "ComplexFloatStorage", np.dtype(np.complex64)),
    ("complex128", "ComplexDoubleStorage", np.dtype(np.complex128)),
    ("int64", "LongStorage", np.dtype(np.int64)),
    ("int32", "IntStorage", np.dtype(np.int32)),
    ("int16", "ShortStorage", np.dtype(np.int16)),
    ("int8", "CharStorage", np.dtype(np.int8)),
    ("uint8", "ByteStorage", np.dtype(np.uint8)),
    ("bool", "BoolStorage", np.dtype(np.bool_)),
    ("uint16", None, np.dtype(np.uint16)),
    ("uint32", None, np.dtype(np.uint32)),
    ("uint64", None, np.dtype(np.uint64)),
    ("float8_e4m3fn", None, np.dtype(ml_dtypes.float8_e4m3fn)),
    ("float8_e5m2", None, np.dtype(ml_dtypes.float8_e5m2)),
    ("float8_e4m3fnuz", None, np.dtype(ml_dtypes.float8_e4m3fnuz)),
    ("float8_e5m2fnuz", None, np.dtype(ml_dtypes.float8_e5m2fnuz)),
    ("float8_e8m0fnu", None, np.dtype(ml_dtypes.float8_e8m0fnu)),
]
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "net", "policy")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a torch<1.6 (non-zip) file
_LEGACY_PROTOCOL = 1001
_ALIGNMENT = 64  # torch.save starts every record's bytes on a 64-byte boundary so they can be memory-mapped


class _Refused(Exception):
    """The pickle asks for something outside the allow-list; the message says what."""


class _Corrupt(Exception):
    """The file is damaged or is not a torch file; the message says what was wrong."""


class _Global:
    """Safe stand-in for one allowed global: a rebuild function, a storage type or a dtype."""

    __slots__ = ("kind", "name", "value")

    def __init__(self, kind: str, name: str, value: Any):
        self.kind, self.name, self.value = kind, name, value

    def __call__(self, *args: Any) -> Any:
        if self.kind != "function":
            raise _Refused(f"calls {self.name}")
        return self.value(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"sets the state of {self.name}")


class _Storage:
    """A byte range of one storage record, ``data/<key>`` in a zip file."""

    __slots__ = ("dtype", "key", "nbytes", "start")

    def __init__(self, key: str, dtype: np.dtype, start: int, nbytes: int):
        self.key, self.dtype, self.start, self.nbytes = key, dtype, start, nbytes

    def __setstate__(self, state: Any) -> None:
        raise _Refused("sets the state of a storage")


class _Tensor:
    """A tensor record; its bytes are read once the whole pickle is known to be safe."""

    __slots__ = ("conj", "dtype", "neg", "offset", "size", "storage", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype, metadata: Any):
        if not isinstance(storage, _Storage):
            raise _Corrupt("a tensor record has no storage")
        size, stride = _ints(size), _ints(stride)
        if not isinstance(offset, int) or len(size) != len(stride):
            raise _Corrupt("a tensor record has a malformed offset, size or stride")
        self.storage, self.dtype, self.offset, self.size, self.stride = storage, dtype, offset, size, stride
        metadata = metadata if isinstance(metadata, dict) else {}
        # torch saves lazily conjugated or negated views with a flag instead of resolving them
        self.conj, self.neg = bool(metadata.get("conj")), bool(metadata.get("neg"))

    def __setstate__(self, state: Any) -> None:
        raise _Refused("sets the state of a tensor")

    def to_numpy(self, blob: Callable[[str], bytes], big_endian: bool) -> np.ndarray:
        """A contiguous copy of the tensor, honouring its offset, size and stride."""
        st, itemsize = self.storage, self.dtype.itemsize
        raw = blob(st.key)
        if len(raw) < st.start + st.nbytes:
            raise _Corrupt(f"storage data/{st.key} is shorter than its record says")
        count = st.nbytes // itemsize
        base = np.frombuffer(raw, dtype=self.dtype, count=count, offset=st.start)
        if 0 in self.size:
            return np.zeros(self.size, self.dtype)
        # bounds-check before as_strided, which would otherwise read outside the buffer
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or min(self.size + self.stride, default=0) < 0 or last >= count:
            raise _Corrupt(f"a tensor reaches past the end of storage {st.key}")
        strides = [s * itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(base[self.offset :], self.size, strides, writeable=False)
        out = np.array(view, order="C")
        if big_endian:
            out.byteswap(inplace=True)
        if self.conj:
            out = np.conj(out)
        if self.neg:
            out = np.negative(out)
        return out


class _OrderedDict(collections.OrderedDict):
    """``collections.OrderedDict``, whose pickled state (torch's ``_metadata``) is dropped, never applied."""

    def __setstate__(self, state: Any) -> None:
        if state is not None and not isinstance(state, dict):
            raise _Refused("sets the state of an OrderedDict")


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(type(v) is int for v in value):
        raise _Corrupt("a tensor record has a malformed size or stride")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride, getattr(storage, "dtype", None), None)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _Tensor(storage, storage_offset, size, stride, getattr(storage, "dtype", None), metadata)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
    if not (isinstance(dtype, _Global) and dtype.kind == "dtype"):
        raise _Corrupt("a tensor record names no dtype")
    return _Tensor(storage, storage_offset, size, stride, dtype.value, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _Tensor):
        raise _Corrupt("a parameter record holds no tensor")
    return data  # a parameter is its tensor; grad flags and python attributes mean nothing here


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {"collections.OrderedDict": _OrderedDict}
    for fn in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter):
        allowed[f"torch._utils.{fn.__name__}"] = _Global("function", f"torch._utils.{fn.__name__}", fn)
    allowed["torch._utils._rebuild_parameter_with_state"] = allowed["torch._utils._rebuild_parameter"]
    for torch_name, storage, dtype in _DTYPES:
        allowed[f"torch.{torch_name}"] = _Global("dtype", f"torch.{torch_name}", dtype)
        if storage is not None:
            # torch<1.6 named the storage of a GPU tensor torch.cuda.FloatStorage and so on
            for module in ("torch", "torch.cuda"):
                allowed[f"{module}.{storage}"] = _Global("storage", f"{module}.{storage}", dtype)
    for name in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        allowed[name] = _Global("storage", name, np.dtype(np.uint8))  # its numel counts bytes
    return allowed


_ALLOWED = _allowed_globals()


class _SafeUnpickler(pickle.Unpickler):
    """Resolves globals only from the allow-list and persistent ids only as storage records."""

    def __init__(self, data: io.BytesIO, storage_dtypes: dict[str, np.dtype]):
        super().__init__(data, encoding="utf-8")
        self.storage_dtypes = storage_dtypes  # key -> dtype of every storage the pickle refers to

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[f"{module}.{name}"]
        except KeyError:
            raise _Refused(f"calls {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        if kind not in ("storage", b"storage"):
            raise _Refused(f"refers to a persistent object of kind {kind!r:.40}")
        # zip files: (storage, type, key, location, numel); torch<1.6 adds a view record (or None)
        if len(pid) not in (5, 6):
            raise _Corrupt("a storage record is malformed")
        stype, key, numel = pid[1], pid[2], pid[4]
        if not (isinstance(stype, _Global) and stype.kind == "storage"):
            raise _Corrupt("a storage record names no storage type")
        if not (isinstance(key, str) and type(numel) is int and numel >= 0):
            raise _Corrupt("a storage record is malformed")
        dtype = self.storage_dtypes.setdefault(key, stype.value)
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return _Storage(key, dtype, 0, numel * dtype.itemsize)
        # torch<0.4 could save a view of a storage: (view key, offset, numel) in elements of the root
        offset, count = _ints(view[1:]) if isinstance(view, tuple) and len(view) == 3 else (-1, -1)
        if offset < 0 or count < 0:
            raise _Corrupt("a storage view record is malformed")
        return _Storage(key, dtype, offset * dtype.itemsize, count * dtype.itemsize)


def read_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict in a torch ``.pt``/``.pth`` file (or in a training checkpoint that wraps one).

    Nested dicts of tensors are flattened with dotted keys; bfloat16 and float8 come back as ml_dtypes arrays.
    """
    path = Path(path)
    with _reading(path), path.open("rb") as f:
        head = f.read(32)
        f.seek(0)
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(f) as zf:
                return _read_zip(zf, path)
        if _LEGACY_MAGIC.to_bytes(10, "little") in head:
            return _read_legacy(f.read(), path)
        raise _Corrupt("it is neither a zip archive nor a torch<1.6 pickle")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn every way a file can be bad into one JaxinterpError line that names it."""
    try:
        yield
    except JaxinterpError:
        raise
    except _Refused as e:
        raise JaxinterpError(
            f"refusing to load {path}: its pickle {e}, which is not a tensor record; only plain state dicts are read"
        ) from e
    except OSError as e:
        raise JaxinterpError(f"cannot read {path}: {e.strerror or e}") from e
    except (
        _Corrupt,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        RecursionError,
        UnicodeDecodeError,
        NotImplementedError,  # a zip entry compressed with a method zipfile lacks
    ) as e:
        detail = str(e) if isinstance(e, _Corrupt) else f"{type(e).__name__}: {e}"
        detail = " ".join(detail.split())[:200]
        raise JaxinterpError(f"cannot read {path}: {detail}; the file is corrupt or not a torch file") from e


def _read_zip(zf: zipfile.ZipFile, path: Path) -> dict[str, np.ndarray]:
    names = zf.namelist()
    prefix = names[0].split("/", 1)[0] if names else ""  # the archive name, like torch's reader takes it
    if f"{prefix}/data.pkl" not in names:
        raise _Corrupt("the zip archive has no data.pkl")
    byteorder = zf.read(f"{prefix}/byteorder") if f"{prefix}/byteorder" in names else b"little"
    if byteorder not in (b"little", b"big"):
        raise _Corrupt(f"unknown byte order {byteorder[:20]!r}")
    obj = _SafeUnpickler(io.BytesIO(zf.read(f"{prefix}/data.pkl")), {}).load()
    blobs: dict[str, bytes] = {}

    def blob(key: str) -> bytes:
        if key not in blobs:
            if f"{prefix}/data/{key}" not in names:
                raise _Corrupt(f"storage data/{key} is missing")
            blobs[key] = zf.read(f"{prefix}/data/{key}")
        return blobs[key]

    tensors = _find_state_dict(obj, path)
    big = byteorder != sys.byteorder.encode()
    return {k: t.to_numpy(blob, big) for k, t in tensors.items()}


def _read_legacy(data: bytes, path: Path) -> dict[str, np.ndarray]:
    """A torch<1.6 file: magic, protocol and system-info pickles, the object pickle, the storage keys, then
    each storage as an int64 element count and its bytes."""
    f = io.BytesIO(data)
    dtypes: dict[str, np.dtype] = {}

    def load() -> Any:
        return _SafeUnpickler(f, dtypes).load()

    if load() != _LEGACY_MAGIC or load() != _LEGACY_PROTOCOL:
        raise _Corrupt("its torch<1.6 header is malformed")
    sys_info = load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj = load()
    keys = load()
    if not isinstance(keys, list):
        raise _Corrupt("its storage list is malformed")
    order = "little" if little else "big"
    blobs = {}
    for key in keys:
        if key not in dtypes:
            raise _Corrupt(f"storage {key!r:.40} is not referred to by any tensor")
        numel = int.from_bytes(f.read(8), order, signed=True)
        nbytes = numel * dtypes[key].itemsize
        blobs[key] = f.read(nbytes)
        if numel < 0 or len(blobs[key]) != nbytes:
            raise _Corrupt(f"storage {key} is truncated")

    def blob(key: str) -> bytes:
        if key not in blobs:
            raise _Corrupt(f"storage {key!r:.40} is missing")
        return blobs[key]

    tensors = _find_state_dict(obj, path)
    return {k: t.to_numpy(blob, order != sys.byteorder) for k, t in tensors.items()}


def _find_state_dict(obj: Any, path: Path) -> dict[str, _Tensor]:
    """The tensors at the top level, else under the first wrapper key of a training checkpoint that holds only
    (nested dicts of) tensors, else the whole tree if every leaf is a tensor."""
    if not isinstance(obj, dict):
        raise JaxinterpError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    if all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in obj.items()):
        return obj
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and (tensors := _tensor_leaves(obj[key], "")):
            return tensors
    if tensors := _tensor_leaves(obj, ""):
        return tensors
    keys = ", ".join(repr(k)[:40] for k in list(obj)[:20])
    raise JaxinterpError(
        f"cannot find a state dict in {path}: it is a dict with keys {keys}; expected tensors at the top "
        f"level or under one of {', '.join(_WRAPPER_KEYS)}"
    )


def _tensor_leaves(tree: dict, prefix: str) -> dict[str, _Tensor] | None:
    """Nested string-keyed dicts flattened to dotted keys, or None if any leaf is not a tensor."""
    out: dict[str, _Tensor] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            return None
        if isinstance(value, _Tensor):
            out[prefix + key] = value
        elif (
            isinstance(value, dict)
            and value
            and (sub := _tensor_leaves(value, f"{prefix}{key}.")) is not None
        ):
            out.update(sub)
        else:
            return None
    return out


def write_torch_file(path: str | Path, state_dict: Mapping[str, ArrayLike]) -> None:
    """Save ``state_dict`` as torch.save does (zip archive, protocol-2 pickle) so that
    ``torch.load(path, weights_only=True)`` reads it; the pickle is written opcode by opcode, without torch."""
    path = Path(path)
    by_numpy = {dtype: (name, storage) for name, storage, dtype in _DTYPES}
    arrays = {}
    for key, value in state_dict.items():
        array = np.asarray(value)
        dtype = array.dtype if array.dtype.isnative else array.dtype.newbyteorder("=")
        if not isinstance(key, str) or dtype not in by_numpy:
            raise JaxinterpError(
                f"cannot write {path}: entry {key!r:.60} ({array.dtype}) is not a string-keyed array of a "
                "dtype torch files hold"
            )
        arrays[key] = np.asarray(array, dtype=dtype, order="C")

    out = [pickle.PROTO, b"\x02", _global("collections", "OrderedDict"), pickle.EMPTY_TUPLE, pickle.REDUCE]
    if arrays:
        out.append(pickle.MARK)
        for index, (key, array) in enumerate(arrays.items()):
            out += [_str(key), _tensor(str(index), array, *by_numpy[array.dtype])]
        out.append(pickle.SETITEMS)
    out.append(pickle.STOP)

    records = [("data.pkl", b"".join(out)), ("byteorder", b"little")]
    for index, array in enumerate(arrays.values()):
        # torch stores little-endian bytes whatever the machine
        records.append((f"data/{index}", (array.byteswap() if sys.byteorder == "big" else array).tobytes()))
    records.append(("version", b"3\n"))
    # The records sit in a folder named after the file, as torch names it: the final name, not the temporary one.
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            _write_aligned(zf, f"{path.stem}/{name}", data)


def _write_aligned(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """One stored record whose bytes start on a 64-byte boundary, padded the way torch pads (an "FB" extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    # zipfile writes a 30-byte local header, the name, our extra field, and a 20-byte zip64 field for big records
    zip64 = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0
    start = zf.fp.tell() + 30 + len(name.encode()) + 4 + zip64
    pad = -start % _ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    zf.writestr(info, data)


def _tensor(key: str, array: np.ndarray, torch_name: str, storage: str | None) -> bytes:
    """Opcodes that rebuild one contiguous tensor from storage ``key``, as torch's ``Tensor.__reduce_ex__`` does."""
    size = array.shape
    stride, step = [], 1
    for n in reversed(size):  # torch's contiguous strides, which treat a 0-length dim as length 1
        stride.insert(0, step)
        step *= max(n, 1)
    if storage is None:  # dtypes without a typed storage class: raw bytes plus a dtype argument
        fn, stype, numel = "_rebuild_tensor_v3", _global("torch.storage", "UntypedStorage"), array.nbytes
    else:
        fn, stype, numel = "_rebuild_tensor_v2", _global("torch", storage), array.size
    persistent_id = _tuple([_str("storage"), stype, _str(key), _str("cpu"), _int(numel)]) + pickle.BINPERSID
    hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    args = [persistent_id, _int(0), _tuple([_int(n) for n in size]), _tuple([_int(s) for s in stride])]
    args += [pickle.NEWFALSE, hooks] + ([_global("torch", torch_name)] if storage is None else [])
    return _global("torch._utils", fn) + _tuple(args) + pickle.REDUCE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _str(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE if items else pickle.EMPTY_TUPLE

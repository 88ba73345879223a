"""Write one group file (or the utterance table's file) of a cache, streaming in blocks of rows.

Every fixed-size dataset is chunked (about 1 MiB a chunk) with HDF5's fletcher32 checksum filter,
so a damaged chunk fails its read instead of returning garbage; variable-length strings (which
HDF5 stores outside the chunks and will not filter) get a ``crc32`` attribute over their contents. Arrays are written
in increasing row order, a whole number of chunks at a time, so every chunk is written once and
memory holds one block (``BLOCK_BYTES``, or one utterance's frames if that is bigger).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import h5py
import numpy as np

from erc.features.schema import SCHEMA_VERSION, UTTERANCE_COLUMNS, UtteranceTable, group_path

STR = h5py.string_dtype("utf-8")
LIBVER = ("v108", "v110")  # version-2 object headers: HDF5's metadata checksums; readable by HDF5 >= 1.8
CHUNK_BYTES = 1 << 20
BLOCK_BYTES = 8 << 20
STR_CHUNK = 4096


class RowSource(Protocol):
    """What a group file is written from (the journal, or the parts of a sharded extraction)."""

    n: int
    rows: np.ndarray                # [n] the cache rows of the output, increasing
    status: list[str]               # [n]
    present: np.ndarray             # [n] bool
    frame_len: np.ndarray | None    # [n] frames per row, None when the group keeps no frames
    dim: int
    layers_shape: tuple[int, ...] | None
    frame_dim: int | None
    frame_dtype: str

    def pooled(self, a: int, b: int) -> np.ndarray: ...        # [b - a, D]
    def layers(self, a: int, b: int) -> np.ndarray: ...        # [b - a, L, D]
    def frames(self, a: int, b: int) -> np.ndarray: ...        # [sum T of rows a..b-1, F]


@contextlib.contextmanager
def new_h5(path: Path, reserve: int = 1 << 20) -> Iterator[h5py.File]:
    """``h5py.File(path, "w")`` for a file that is discarded when writing it fails, made safe for a
    full disk. HDF5 does not survive a failed close (a later garbage collection can crash the
    process), so a close must never be the first write to fail:

    - ``reserve`` bytes (the file's expected size) are claimed with ``posix_fallocate`` first and
      released again, so a full disk or quota stops here, before HDF5 holds the file;
    - the chunk cache is off, so a data write that fails, fails in the call that made it;
    - on any failure the file is truncated (its blocks given back) before it is closed, so the
      close's last metadata writes find room, and the error goes on.
    """
    _reserve(path, reserve)
    h5 = h5py.File(path, "w", libver=LIBVER, rdcc_nbytes=0)
    try:
        yield h5
    except BaseException:
        _abandon(h5, path)
        raise
    h5.close()


def _reserve(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, max(size, 1))
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            st = os.statvfs(path)  # a filesystem without fallocate: at least compare with its free space
            if st.f_bavail * st.f_frsize < size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _abandon(h5: h5py.File, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.truncate(path, 0)
    with contextlib.suppress(OSError, RuntimeError):
        h5.close()  # once: HDF5 may crash on a second close of a file whose close failed
    gc.collect()


def group_bytes(src: RowSource) -> int:
    """About what the group file of ``src`` takes on disk (its data plus a margin for HDF5's
    metadata and the checksums), for :func:`new_h5`'s reservation."""
    n = src.n
    data = n * src.dim * 4 + n * 9 + sum(len(s) + 16 for s in src.status)
    if src.layers_shape is not None:
        data += n * int(np.prod(src.layers_shape)) * 4
    if src.frame_len is not None and src.frame_dim is not None:
        data += int(src.frame_len.sum()) * src.frame_dim * np.dtype(src.frame_dtype).itemsize + 8 * (n + 1)
    return int(data * 1.02) + (1 << 20)


def h5_text(value: str) -> str:
    """``value`` as HDF5 can store it (UTF-8): text that came from the command line or a path under a
    non-UTF-8 locale (``LC_ALL=C``) holds its bytes as surrogates, which are decoded back as UTF-8
    here (any byte that is not UTF-8 is kept as a ``\\xNN`` escape)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strings_crc(values: Sequence[str | bytes]) -> int:
    """The ``crc32`` attribute of a string dataset: over the UTF-8 values, each followed by NUL."""
    crc = 0
    for v in values:
        crc = zlib.crc32((v if isinstance(v, bytes) else str(v).encode()) + b"\0", crc)
    return crc


def checked_dataset(g: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any) -> h5py.Dataset:
    """An empty chunked dataset with the fletcher32 filter (about ``CHUNK_BYTES`` a chunk)."""
    if any(s == 0 for s in shape[1:]):  # no bytes at all (e.g. every utterance failed): nothing to check
        return g.create_dataset(name, shape=shape, dtype=dtype)
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // max(row, 1)))
    maxshape = (None, *shape[1:]) if shape[0] == 0 else None  # a chunk may not exceed a fixed size
    return g.create_dataset(name, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]), maxshape=maxshape,
                            fletcher32=True)


def write_checked(g: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    ds = checked_dataset(g, name, data.shape, data.dtype)
    if data.size:
        ds[...] = data
    return ds


def write_strings(g: h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    """Variable-length UTF-8 strings with a ``crc32`` attribute over their contents (HDF5 takes no
    filter, so no fletcher32, on variable-length data)."""
    values = [h5_text(v) for v in values]  # paths in statuses may hold a C locale's surrogates
    n = len(values)
    ds = g.create_dataset(name, shape=(n,), dtype=STR, chunks=(max(1, min(n, STR_CHUNK)),),
                          maxshape=(None,) if n == 0 else None)
    for a in range(0, n, STR_CHUNK):
        ds[a: a + STR_CHUNK] = np.asarray(list(values[a: a + STR_CHUNK]), dtype=object)
    ds.attrs["crc32"] = strings_crc(values)
    return ds


def _write_rows(ds: h5py.Dataset, n: int, read: Any) -> None:
    """``ds[a:b] = read(a, b)`` over ``n`` rows, in blocks of whole chunks."""
    chunk = ds.chunks[0]
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(chunk, BLOCK_BYTES // row // chunk * chunk)
    for a in range(0, n, step):
        b = min(n, a + step)
        ds[a:b] = read(a, b)


class _Appender:
    """Appends rows to a chunked dataset in increasing order, writing whole chunks only (each
    chunk once); holds at most one chunk's worth of rows between calls."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds, self.at, self.chunk = ds, 0, ds.chunks[0]
        self.pending = np.empty((0, *ds.shape[1:]), dtype=ds.dtype)

    def add(self, block: np.ndarray) -> None:
        if len(self.pending):  # complete the pending chunk from the head of the block
            head = min(len(block), self.chunk - len(self.pending))
            self.pending = np.concatenate([self.pending, block[:head]])
            block = block[head:]
            if len(self.pending) < self.chunk:
                return
            self._write(self.pending)
            self.pending = self.pending[:0]
        cut = len(block) // self.chunk * self.chunk
        if cut:
            self._write(block[:cut])
        self.pending = block[cut:].copy()

    def _write(self, rows: np.ndarray) -> None:
        self.ds[self.at: self.at + len(rows)] = rows
        self.at += len(rows)

    def close(self) -> None:
        if len(self.pending):
            self._write(self.pending)
            self.pending = self.pending[:0]


def _write_frames(g: h5py.Group, src: RowSource) -> None:
    lens = src.frame_len
    assert lens is not None and src.frame_dim is not None
    offsets = np.zeros(src.n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    ds = checked_dataset(g, "frames", (int(offsets[-1]), src.frame_dim), src.frame_dtype)
    row = src.frame_dim * np.dtype(src.frame_dtype).itemsize
    budget = max(1, BLOCK_BYTES // row)
    out = _Appender(ds)
    a = 0
    while a < src.n:
        b = int(np.searchsorted(offsets, offsets[a] + budget, side="right")) - 1
        b = min(src.n, max(b, a + 1))
        out.add(src.frames(a, b))
        a = b
    out.close()
    write_checked(g, "offsets", offsets)


def write_group_file(path: Path, modality: str, encoder: str, src: RowSource, attrs: dict[str, Any],
                     partial: bool = False, owner: dict[str, Any] | None = None) -> None:
    """Write group ``features/<modality>/<encoder>`` from ``src`` into a new HDF5 file ``path``
    (``partial``: a ``--shard`` part, which also records ``rows``). ``owner``: the file attributes
    naming the cache it belongs to (:func:`owner_attrs`)."""
    with new_h5(path, group_bytes(src)) as h5:
        h5.attrs.update(owner or {})
        g = h5.create_group(group_path(modality, encoder))
        pooled = checked_dataset(g, "pooled", (src.n, src.dim), np.float32)
        if src.n and src.dim:
            _write_rows(pooled, src.n, src.pooled)
        if src.layers_shape is not None:
            layers = checked_dataset(g, "layers", (src.n, *src.layers_shape), np.float32)
            _write_rows(layers, src.n, src.layers)
        write_checked(g, "present", np.asarray(src.present, dtype=bool))
        write_strings(g, "status", src.status)
        if src.frame_len is not None and src.frame_dim is not None:
            _write_frames(g, src)
        if partial:
            write_checked(g, "rows", np.asarray(src.rows, dtype=np.int64))
        g.attrs["modality"] = modality
        g.attrs["encoder"] = encoder
        g.attrs["dim"] = src.dim
        g.attrs["frame_dim"] = src.frame_dim if src.frame_dim is not None else -1
        g.attrs["frame_dtype"] = src.frame_dtype
        for k, v in attrs.items():
            g.attrs[k] = h5_text(v) if isinstance(v, str) else v if isinstance(v, (int, float, bool)) \
                else json.dumps(v, default=str)


def root_attrs(table: UtteranceTable, shard: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "dataset": table.dataset,
                           "manifest_hash": table.manifest_hash, "labels": json.dumps(table.labels),
                           "n_utterances": len(table)}
    if shard:
        out["shard"] = shard
    return out


def owner_attrs(table: UtteranceTable) -> dict[str, Any]:
    """The file attributes of every file of a cache: the manifest hash and utterance count of the
    cache it belongs to (:mod:`erc.features.members` checks them on every open)."""
    return {"manifest_hash": table.manifest_hash, "n_utterances": len(table)}


def write_table_file(path: Path, table: UtteranceTable) -> None:
    """The ``/utterances`` table in a new HDF5 file ``path``."""
    size = sum(len(str(v)) + 16 for col in UTTERANCE_COLUMNS for v in table.columns[col])
    with new_h5(path, int(size * 1.05) + (1 << 20)) as h5:
        h5.attrs.update(owner_attrs(table))
        g = h5.create_group("utterances")
        for col in UTTERANCE_COLUMNS:
            values = table.columns[col]
            if col == "turn":
                write_checked(g, col, np.asarray(values, dtype=np.int64))
            else:
                write_strings(g, col, [str(v) for v in values])

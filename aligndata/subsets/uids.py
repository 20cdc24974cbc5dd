"""Uids as 128-bit numbers, and the lists of them `subset` reads and writes.

A uid is 32 hex digits (ours: sha256(url + TAB + caption), pipeline/candidates.py; DataComp's are the same width).
As a number it is the pair (hi, lo) of its first and last 16 hex digits, i.e. ``divmod(int(uid, 16), 2**64)``.

DataComp's subset format (read from mlfoundations/datacomp resharder.py, ``load_subset`` and the membership
test in ``copy_worker``): a 1-D array of dtype ``numpy.dtype("u8,u8")`` (fields f0 = hi, f1 = lo, the machine's
byte order, little-endian on every machine DataComp runs on), sorted lexicographically because the resharder
tests membership with ``np.searchsorted(subset, uid, "left")`` / ``"right"`` and writes a sample once per copy
in that range, so the array must also hold each uid once. The file is a ``.npy`` (recognised by its magic
``\\x93NUMPY``, loaded with mmap) or else a raw memmap of those 16-byte records. We write ``.npy`` with the
explicit little-endian dtype, sorted and unique; we read both forms, plus text (one uid a line) and parquet
(a ``uid`` column) lists, and the dedup listing (``duplicates/part-*.parquet``: uid, group, keep, kind).

Membership (``UidSet``) keeps two sorted uint64 arrays: 16 bytes a listed uid, searched with plain integer
``searchsorted`` on hi (several times faster than numpy's generic structured compare) and lo checked after.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligndata.io.storage import StorageError, storage_for
from aligndata.io.tables import ParquetColumnsError, read_parquet_columns
from aligndata.subsets import SubsetError

UID_DTYPE = np.dtype([("f0", "<u8"), ("f1", "<u8")])  # == np.dtype("u8,u8") on a little-endian machine
UID_HEX = 32
NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"

# ASCII code -> hex digit value, 255 for anything else.
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def hex_to_pairs(values, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) uint64 arrays of string uids (a pyarrow array or a list); ``what`` names the values in the error
    raised for a null, a length other than 32 or a non-hex digit (e.g. "shard 00003's uid column")."""
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=pa.string())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise SubsetError(f"{what}: uids must be strings of {UID_HEX} hex digits, not {array.type}")
    n = len(array)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    if array.null_count:
        raise SubsetError(f"{what}: {array.null_count} uid(s) are null")
    lengths = pc.binary_length(array).to_numpy(zero_copy_only=False)
    if (lengths != UID_HEX).any():
        bad = int(np.argmax(lengths != UID_HEX))
        raise SubsetError(f"{what}: {array[bad].as_py()[:80]!r} is not a uid of {UID_HEX} hex digits")
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], offsets_type)[array.offset: array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0]: offsets[-1]]
    nibbles = _NIBBLE[data].reshape(n, UID_HEX)
    if (nibbles == 255).any():
        bad = int(np.argmax((nibbles == 255).any(axis=1)))
        raise SubsetError(f"{what}: {array[bad].as_py()[:80]!r} is not a uid of {UID_HEX} hex digits")
    nibbles = nibbles.astype(np.uint64)
    hi = np.zeros(n, np.uint64)
    lo = np.zeros(n, np.uint64)
    for i in range(16):
        hi = (hi << np.uint64(4)) | nibbles[:, i]
        lo = (lo << np.uint64(4)) | nibbles[:, 16 + i]
    return hi, lo


def pairs_to_hex(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """The lower-case hex strings of (hi, lo) pairs (for messages and text lists; not a hot path)."""
    return [f"{int(h):016x}{int(l):016x}" for h, l in zip(hi, lo)]


def sorted_unique(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs in lexicographic (hi, lo) order, each once."""
    hi = np.asarray(hi, np.uint64)
    lo = np.asarray(lo, np.uint64)
    order = np.argsort(hi)  # an integer sort; equal hi (about never, for hashes) needs the two-key sort
    hi, lo = hi[order], lo[order]
    if len(hi) > 1 and (hi[1:] == hi[:-1]).any():
        order = np.lexsort((lo, hi))
        hi, lo = hi[order], lo[order]
        fresh = np.ones(len(hi), bool)
        fresh[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        hi, lo = hi[fresh], lo[fresh]
    return hi, lo


class UidSet:
    """A set of uids as sorted (hi, lo) arrays."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray):
        self.hi, self.lo = sorted_unique(hi, lo)

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """A boolean mask: which of the (hi, lo) pairs are in the set."""
        left = np.searchsorted(self.hi, hi, "left")
        right = np.searchsorted(self.hi, hi, "right")
        found = np.zeros(len(hi), bool)
        one = (right - left) == 1
        found[one] = self.lo[left[one]] == lo[one]
        for i in np.nonzero((right - left) > 1)[0]:  # several listed uids share this hi
            run = self.lo[left[i]: right[i]]
            j = np.searchsorted(run, lo[i])
            found[i] = j < len(run) and run[j] == lo[i]
        return found


def npy_bytes(hi: np.ndarray, lo: np.ndarray) -> bytes:
    """DataComp's subset file for these uids: a .npy of dtype u8,u8 (little-endian), sorted, each uid once."""
    hi, lo = sorted_unique(hi, lo)
    records = np.empty(len(hi), UID_DTYPE)
    records["f0"], records["f1"] = hi, lo
    buffer = io.BytesIO()
    np.save(buffer, records, allow_pickle=False)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ reading


def read_uid_list(path: str) -> UidSet:
    """The uids listed in ``path``: DataComp's .npy or raw memmap, parquet (a ``uid`` column) or text (one uid a
    line; blank lines and lines starting with '#' are skipped). The form is told by the content, not the name:
    the .npy and parquet magic bytes, then text when the file starts with printable ASCII, else raw records."""
    storage = _storage(path)
    if not storage.exists(path):
        raise SubsetError(f"--uids {path}: no such file")
    head = storage.read_range(path, 0, 4096)
    if head.startswith(NPY_MAGIC):
        return _read_npy(storage, path)
    if head.startswith(PARQUET_MAGIC):
        table = _read_parquet(storage, path, ["uid"], "--uids")
        return UidSet(*hex_to_pairs(table.column("uid"), f"--uids {path}"))
    if _looks_like_text(head):
        return _read_text(storage, path)
    return _read_raw(storage, path)


def _storage(path: str):
    try:
        return storage_for(path)
    except StorageError as err:
        raise SubsetError(str(err)) from None


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _read_npy(storage, path: str) -> UidSet:
    try:
        if storage.name == "local":
            records = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with storage.open_read(path) as f:
                records = np.load(io.BytesIO(f.read()), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SubsetError(f"--uids {path}: not a readable .npy file ({err})") from None
    names = records.dtype.names or ()
    if records.ndim != 1 or len(names) != 2 or any(
            records.dtype[name].kind != "u" or records.dtype[name].itemsize != 8 for name in names):
        raise SubsetError(f"--uids {path}: a .npy of uids must be 1-D with dtype u8,u8 (DataComp's subset format), "
                          f"got shape {records.shape} dtype {records.dtype}")
    return UidSet(np.asarray(records[names[0]], np.uint64), np.asarray(records[names[1]], np.uint64))


def _read_raw(storage, path: str) -> UidSet:
    size = storage.size(path)
    if size % UID_DTYPE.itemsize:
        raise SubsetError(f"--uids {path}: neither .npy, parquet nor text, and its {size} bytes are not a whole "
                          f"number of 16-byte uid records (DataComp's raw memmap form)")
    if storage.name == "local":
        records = np.memmap(path, UID_DTYPE, mode="r") if size else np.zeros(0, UID_DTYPE)
    else:
        with storage.open_read(path) as f:
            records = np.frombuffer(f.read(), UID_DTYPE)
    return UidSet(np.asarray(records["f0"]), np.asarray(records["f1"]))


def _read_text(storage, path: str) -> UidSet:
    with storage.open_read(path) as f:
        raw = f.read()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise SubsetError(f"--uids {path}: not UTF-8 text ({err})") from None
    numbers, uids = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            numbers.append(number)
            uids.append(line)
    try:
        return UidSet(*hex_to_pairs(uids, f"--uids {path}"))
    except SubsetError:
        bad = next(i for i, uid in enumerate(uids) if len(uid) != UID_HEX or not _is_hex(uid))
        raise SubsetError(f"--uids {path} line {numbers[bad]}: {uids[bad][:80]!r} is not a uid of {UID_HEX} hex "
                          f"digits") from None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _read_parquet(storage, path: str, columns: list[str], option: str) -> pa.Table:
    try:
        return read_parquet_columns(storage, path, columns)
    except ParquetColumnsError as err:
        if err.missing:
            raise SubsetError(f"{option} {path}: no {', '.join(err.missing)} column (has "
                              f"{', '.join(err.present)})") from None
        raise SubsetError(f"{option} {path}: not a readable parquet file ({err.cause})") from None


def read_duplicates(path: str) -> tuple[UidSet, int]:
    """The uids `aligndata dedup` marked ``keep == false`` in ``path`` (a directory of ``part-*.parquet`` or one
    parquet file with columns uid, group, keep, kind), and how many rows the listing has."""
    storage = _storage(path)
    if storage.isdir(path):
        parts = storage.glob(storage.join(path, "part-*.parquet"))
        if not parts:
            raise SubsetError(f"--drop-duplicates {path}: the directory holds no part-*.parquet files "
                              f"(run aligndata dedup first, or name the listing)")
    elif storage.exists(path):
        parts = [path]
    else:
        raise SubsetError(f"--drop-duplicates {path}: no such file or directory (run aligndata dedup first, or "
                          f"name the listing)")
    his, los, rows = [], [], 0
    for part in parts:
        table = _read_parquet(storage, part, ["uid", "keep"], "--drop-duplicates")
        if not pa.types.is_boolean(table.schema.field("keep").type):
            raise SubsetError(f"--drop-duplicates {part}: the keep column must be boolean, got "
                              f"{table.schema.field('keep').type}")
        keep = table.column("keep")
        if keep.null_count:
            raise SubsetError(f"--drop-duplicates {part}: {keep.null_count} row(s) have no keep value")
        rows += table.num_rows
        dropped = table.filter(pc.invert(keep))
        hi, lo = hex_to_pairs(dropped.column("uid"), f"--drop-duplicates {part}")
        his.append(hi)
        los.append(lo)
    return UidSet(np.concatenate(his), np.concatenate(los)), rows

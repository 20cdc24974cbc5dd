"""Deterministic WebDataset shard writer: ``NAME.tar`` + ``NAME.parquet`` + ``NAME_stats.json``.

NAME is the shard's index zero-padded to ``digits`` (5 by default, as img2dataset's; 8 names shards the way
DataComp's pools are named, ``00000000.tar``). The parquet holds a row per sample (``status`` "success") and, when
asked, a row per failed row of the shard too (img2dataset's layout, see ``shards.outcomes``); the stats hold
img2dataset's counters beside ours.

Every path goes through ``aligndata.io.storage``, so the same code writes local disk, gs:// and s3://. Every file is
written under a temporary name in its final directory and renamed into place (``aligndata.io.atomic``): a crash
leaves at most a hidden
``.NAME.tmp-<hex>`` file (removed by ``prepare_output_dir(overwrite=True)``), never a partial shard, and a retried
Beam bundle rewrites the same bytes over the same name. Within a shard, the stats file is written last, so its
presence marks a complete shard.

Tars are byte-for-byte reproducible: samples sorted by key, members of a sample adjacent in the order
image, ``.cls``, ``.json``, ``.txt``; mtime 0, uid/gid 0, empty user/group names, mode 0644, GNU format.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.io.atomic import atomic_writer, json_default, write_bytes_atomic, write_json_atomic
from aligndata.io.storage import storage_for
from aligndata.shards.contract import CANDIDATES, META_COLUMNS, REJECTED
from aligndata.shards.names import DEFAULT_SHARD_DIGITS, shard_name
from aligndata.shards.outcomes import STATUS_COLUMNS, SUCCESS, Failure, shard_counters

# The parquet's typed columns, in this order: the contract's fields (aligndata/shards/contract.py), then each
# row's outcome (img2dataset's status and error_message).
KNOWN_COLUMNS = {**META_COLUMNS, **STATUS_COLUMNS}


def owned_file_re(digits: int = DEFAULT_SHARD_DIGITS) -> re.Pattern:
    """Files aligndata writes into an output directory; only these are removed by prepare_output_dir(overwrite=True).
    Shard files of at least min(digits, 5) digits: a rerun with other --shard-digits still replaces the last one's.
    classnames.txt too: left behind by an image-label run, it would make ``train`` read the next run's image-text
    shards as labelled."""
    least = min(digits, DEFAULT_SHARD_DIGITS)
    return re.compile(
        rf"^(?:\d{{{least},}}(?:\.tar|\.parquet|_stats\.json)"
        r"|sizes\.json|report\.json|report\.html|rejected\.parquet|candidates\.parquet|config\.json"
        r"|subset\.json|uids\.npy|classnames\.txt"
        r"|\..+\.tmp-[0-9a-f]{32})$"
    )


OWNED_FILE_RE = owned_file_re()

# ... and inside the ledger directories (DIR/rejected/, DIR/candidates/): their parts and temp files.
OWNED_LEDGER_FILE_RE = re.compile(r"^(?:part-\d{5,}-of-\d{5,}\.parquet|\..+\.tmp-[0-9a-f]{32})$")

_TAR_FORMAT = tarfile.GNU_FORMAT  # no PAX headers (which could carry varying metadata); long names still work


class OutputDirNotEmpty(Exception):
    """The output directory holds files and the user did not ask to overwrite them."""


@dataclass
class Sample:
    """One WebDataset sample. ``key`` becomes the member basename (no dots, no slashes)."""

    key: str
    image: bytes
    image_ext: str
    text: str
    meta: dict
    cls: int | None = None


# ---------------------------------------------------------------------------------------------------- tar


def tar_bytes(samples: Iterable[Sample]) -> bytes:
    """The shard tar as bytes. The same samples in any input order give identical bytes."""
    buffer = io.BytesIO()
    _write_tar(buffer, _sorted_checked(samples))
    return buffer.getvalue()


def _sorted_checked(samples: Iterable[Sample]) -> list[Sample]:
    ordered = sorted(samples, key=lambda sample: sample.key)
    for sample in ordered:
        _check_sample(sample)
    for previous, current in zip(ordered, ordered[1:]):
        if previous.key == current.key:
            raise ValueError(f"duplicate sample key {current.key!r} in one shard")
    return ordered


def _check_sample(sample: Sample) -> None:
    key = sample.key
    if not key or "." in key or "/" in key or "\\" in key or "\0" in key:
        # WebDataset splits member names at the first dot: a dotted key would split one sample into two.
        raise ValueError(f"sample key {key!r} must be non-empty and contain no '.', '/', '\\' or NUL")
    if not sample.image_ext.isalnum() or sample.image_ext in ("cls", "json", "txt"):
        raise ValueError(f"sample {key!r}: image extension {sample.image_ext!r} must be alphanumeric (e.g. jpg)")
    if sample.cls is not None and (isinstance(sample.cls, bool) or not isinstance(sample.cls, int)):
        raise ValueError(f"sample {key!r}: cls must be an int or None, got {sample.cls!r}")


def _members(sample: Sample) -> list[tuple[str, bytes]]:
    """Member names and payloads of one sample, in the fixed order image, cls, json, txt."""
    members = [(f"{sample.key}.{sample.image_ext}", sample.image)]
    if sample.cls is not None:
        members.append((f"{sample.key}.cls", str(sample.cls).encode("ascii")))
    meta_json = json.dumps(sample.meta, sort_keys=True, ensure_ascii=False, default=json_default)
    members.append((f"{sample.key}.json", meta_json.encode("utf-8")))
    members.append((f"{sample.key}.txt", sample.text.encode("utf-8")))
    return members


def _write_tar(fileobj: IO[bytes], ordered: list[Sample]) -> int:
    """Write the tar to ``fileobj``; return its size in bytes."""
    with TarMembers(fileobj) as tar:
        for sample in ordered:
            for name, payload in _members(sample):
                tar.add(name, payload)
    return tar.size


class TarMembers:
    """A tar stream with our deterministic headers, members appended in the caller's order: the one place that
    writes tar members (shards here, `aligndata subset`'s copies). ``size`` is the tar's length once closed.

    The bytes are tarfile's (GNU format, as ``tarfile.open(mode="w", format=GNU_FORMAT)`` with ``_tar_info``
    writes them; tests/test_shards.py compares), with one write a member: tarfile's ``addfile`` copies each
    member in 16 KiB pieces and copies its TarInfo, 0.15 ms of a shard's 0.18 ms a sample, written at the end of
    each shard while its worker's fetch threads are idle."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._out = fileobj  # remote write channels may have no tell(): the size is counted here
        self.size = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.size += len(data)

    def add(self, name: str, payload: bytes) -> None:
        self._write(b"".join((_tar_header(name, len(payload)), payload, tarfile.NUL * (-len(payload) % _BLOCK))))

    def close(self) -> int:
        self._write(tarfile.NUL * (2 * _BLOCK))  # the end-of-archive blocks, then padding to a whole record
        self._write(tarfile.NUL * (-self.size % tarfile.RECORDSIZE))
        return self.size

    def __enter__(self) -> TarMembers:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()


_BLOCK = tarfile.BLOCKSIZE
_ENCODING = ("utf-8", "surrogateescape")  # what tarfile uses on a UTF-8 system, fixed here for every system
# The header of a regular file with our fixed metadata (mode 644, owner 0, mtime 0, no user or group names):
# name, mode, uid, gid, size, mtime, checksum, type, link name, GNU magic, user, group, devices, prefix, padding
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


def _tar_header(name: str, size: int) -> bytes:
    encoded = name.encode(*_ENCODING)
    if len(encoded) > tarfile.LENGTH_NAME or size >= 8 ** 11:  # a GNU long-name header, a base-256 size
        return _tar_info(name, size).tobuf(_TAR_FORMAT, *_ENCODING)
    block = bytearray(_HEADER.pack(encoded, b"0000644\0", b"0000000\0", b"0000000\0", b"%011o\0" % size,
                                   b"00000000000\0", b" " * 8, tarfile.REGTYPE, b"", tarfile.GNU_MAGIC, b"", b"",
                                   b"", b"", b""))
    block[148:155] = b"%06o\0" % sum(block)  # the checksum: every byte, its own field counted as spaces
    return bytes(block)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


# ------------------------------------------------------------------------------------------------ parquet


def samples_table(samples: list[Sample], failures: list[Failure] = (),
                  typed: dict[str, pa.DataType] | None = None) -> pa.Table:
    """One row per sample (``status`` "success", ``error_message`` null), then one per failure in the order given
    (its status and error message; the image fields null): ``key`` then the metadata fields (known columns first,
    in KNOWN_COLUMNS order, then ``typed``'s in its order, then the others sorted by name). A field missing from
    some rows is null there.

    ``typed``: fields a run adds to every sample besides the contract's (language detection's, see
    contract.LANGUAGE_COLUMNS), typed so every shard of the run has one schema."""
    failures = list(failures)
    types = {**KNOWN_COLUMNS, **(typed or {})}
    arrays = []
    columns = _columns(samples, failures, types)
    for column in columns:
        if column == "key":
            values = [sample.key for sample in samples] + [failure.key for failure in failures]
        elif column == "status":
            values = [SUCCESS] * len(samples) + [failure.status for failure in failures]
        elif column == "error_message":
            values = [None] * len(samples) + [failure.error_message for failure in failures]
        else:
            values = [sample.meta.get(column) for sample in samples] + [failure.meta.get(column) for failure in failures]
        arrays.append(_column_array(column, values, types))
    return pa.Table.from_arrays(arrays, names=columns)


def _columns(samples: list[Sample], failures: list[Failure], types: dict[str, pa.DataType]) -> list[str]:
    present: set[str] = {"key", *STATUS_COLUMNS}
    for sample in samples:
        if sample.meta.get("key", sample.key) != sample.key:
            raise ValueError(f"sample {sample.key!r}: meta['key'] = {sample.meta['key']!r} differs from the key")
        present.update(sample.meta)
    for failure in failures:
        present.update(failure.meta)
    known = [name for name in types if name in present]
    return known + sorted(present - set(known))


def _column_array(column: str, values: list[Any], types: dict[str, pa.DataType]) -> pa.Array:
    try:
        return pa.array(values, type=types.get(column))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise ValueError(f"metadata column {column!r} cannot be stored in parquet: {err}") from err


def parquet_bytes(table: pa.Table) -> bytes:
    """Parquet file bytes (snappy); stable for the same table and pyarrow version."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------------------------------- the shard


def write_shard(output_dir: str, index: int, samples: Iterable[Sample], failures: Iterable[Failure] = (), *,
                digits: int = DEFAULT_SHARD_DIGITS, failed_rows: bool = False, started: float | None = None,
                typed: dict[str, pa.DataType] | None = None) -> dict:
    """Write ``NAME.tar``, ``NAME.parquet`` and (last) ``NAME_stats.json``; return the stats.

    ``failures``: the shard's rows that did not become samples; they are counted in the stats (img2dataset's
    count, failed_to_download, failed_to_resize, status_dict) and, with ``failed_rows``, written to the parquet
    after the samples, sorted by key. ``started``: when the shard's work began (``time.time()``); given, the stats
    get img2dataset's start_time, end_time (after the tar and parquet are written) and duration, which differ from
    run to run (so they are off unless asked for: curate --shard-times).
    Everything is validated before the first write, so a bad sample leaves no file behind. The tar is streamed to
    its temporary file rather than built in memory a second time. ``typed``: see `samples_table`.
    """
    name = shard_name(index, digits)
    ordered = _sorted_checked(samples)
    failures = sorted(failures, key=lambda failure: failure.key)
    table = samples_table(ordered, failures if failed_rows else (), typed)
    counters = shard_counters(len(ordered), failures)
    parquet = parquet_bytes(table)
    storage = storage_for(output_dir)
    with atomic_writer(storage.join(output_dir, f"{name}.tar")) as handle:
        size = _write_tar(handle, ordered)
    return finish_shard(output_dir, name, parquet, table, size, counters, started)


def finish_shard(output_dir: str, name: str, parquet: bytes, table: pa.Table, tar_size: int,
                 counters: dict | None = None, started: float | None = None) -> dict:
    """After ``NAME.tar``: write ``NAME.parquet`` (``parquet``, the bytes of ``table``) and then, last,
    ``NAME_stats.json``; return the stats. ``counters``: img2dataset's (shards.outcomes.shard_counters); by
    default every row of ``table`` is a success."""
    storage = storage_for(output_dir)
    write_bytes_atomic(storage.join(output_dir, f"{name}.parquet"), parquet)
    stats = {
        "shard": name,
        **(counters or shard_counters(table.num_rows, ())),
        "bytes": tar_size,
        "meta_columns": table.column_names,
    }
    if started is not None:
        ended = time.time()
        stats.update(start_time=started, end_time=ended, duration=ended - started)
    write_json_atomic(storage.join(output_dir, f"{name}_stats.json"), stats)
    return stats


SHARD_SUFFIXES = (".tar", ".parquet", "_stats.json")


def compact_shards(output_dir: str, stats: list[dict], digits: int = DEFAULT_SHARD_DIGITS) -> list[dict]:
    """Drop shards that ended up empty (every download failed) and renumber the rest contiguously.

    Readers expect 00000..N-1 with no gaps, and webdataset refuses a tar without samples. Shards are assigned
    before downloading, so an all-failed shard is only known afterwards; it is rare at real shard sizes, and
    when there is none this does nothing. Renaming in ascending order never overwrites a shard still needed:
    every target name is either an empty shard already deleted or a shard already moved down. (A dropped shard's
    failed rows stay in the rejected ledger; the caller keeps its counters, report.json lists them.)
    """
    ordered = sorted(stats, key=lambda s: (len(s["shard"]), s["shard"]))  # numeric order, past 99999 too
    if all(s["successes"] for s in ordered):
        return ordered
    storage = storage_for(output_dir)
    kept = []
    for s in ordered:
        if not s["successes"]:
            for suffix in SHARD_SUFFIXES:
                storage.delete(storage.join(output_dir, s["shard"] + suffix))
    for new_index, s in enumerate(x for x in ordered if x["successes"]):
        new_name = shard_name(new_index, digits)
        if new_name != s["shard"]:
            for suffix in SHARD_SUFFIXES[:2]:
                storage.replace(storage.join(output_dir, s["shard"] + suffix),
                                storage.join(output_dir, new_name + suffix))
            storage.delete(storage.join(output_dir, s["shard"] + "_stats.json"))
            s = dict(s, shard=new_name)
            write_json_atomic(storage.join(output_dir, f"{new_name}_stats.json"), s)
        kept.append(s)
    return kept


def write_sizes(output_dir: str, sizes: dict[str, int]) -> None:
    """``sizes.json`` as open_clip reads it: {"00000.tar": number of samples, ...}."""
    path = storage_for(output_dir).join(output_dir, "sizes.json")
    write_json_atomic(path, {name: int(n) for name, n in sizes.items()})


# ------------------------------------------------------------------------------------------ output folder


def check_output_dir(output_dir: str, overwrite: bool) -> list[str]:
    """The files in ``output_dir`` (none when it does not exist); raise OutputDirNotEmpty when there are some and
    not ``overwrite``. Changes nothing: a command checks this before its work and prepares the folder after."""
    storage = storage_for(output_dir)
    entries = storage.list_files(output_dir)  # dotfiles included (the fetch cache, temp files)
    if entries and not overwrite:
        raise OutputDirNotEmpty(
            f"output directory {output_dir} is not empty ({len(entries)} files); "
            "pass --overwrite to replace the files aligndata wrote there"
        )
    return entries


def prepare_output_dir(output_dir: str, overwrite: bool, shard_digits: int = DEFAULT_SHARD_DIGITS) -> list[str]:
    """Create ``output_dir``; refuse a non-empty one unless ``overwrite``. Returns the paths deleted.

    With ``overwrite`` only files aligndata owns are deleted: ``owned_file_re(shard_digits)`` directly in
    ``output_dir`` (numbered shards, their parquet/stats, sizes/report/config files, an older version's rejected.parquet,
    leftover temp files) and ``OWNED_LEDGER_FILE_RE`` in its ledger directories; anything else a user keeps
    there stays.
    """
    storage = storage_for(output_dir)
    entries = check_output_dir(output_dir, overwrite)
    parent = storage.parent(storage.join(output_dir, "child"))  # how the backend names output_dir as a parent
    ledgers = {storage.parent(storage.join(storage.join(output_dir, name), "child")) for name in (REJECTED, CANDIDATES)}
    owned_re = owned_file_re(shard_digits)
    owned = sorted(
        path for path in entries
        if (storage.parent(path) == parent and owned_re.match(storage.basename(path)))
        or (storage.parent(path) in ledgers and OWNED_LEDGER_FILE_RE.match(storage.basename(path)))
    )
    for path in owned:
        storage.delete(path)
    storage.makedirs(output_dir)  # a no-op on object stores, where "directories" are prefixes
    return owned

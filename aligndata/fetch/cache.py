"""A cache of fetch outcomes, so an interrupted curate run resumes without downloading again.

Each shard's fetches are appended to logs in a directory named after the shard (``00003/<writer>-<segment>.log``):
every entry holds one URL's outcome exactly as the run saw it (the downloaded bytes, or the failure: reason,
detail, status), framed by its lengths and a CRC-32. A resumed run reads the shard's logs back and replays those
outcomes, so it writes the same shards and the same ledger as an uninterrupted run would have, byte for byte,
and fetches only what had not finished. Entries are looked up by URL, never trusted by position: a log from
another job in a shared ``--cache-dir`` only misses.

A successful download is recorded with what the fetch stage made of it (``put(result, processed, payload)``):
the processed image's fields and bytes instead of the downloaded bytes, so a resumed run neither downloads nor
decodes it again, and the log holds ~70 KB a photo instead of the download (~150 KB for a 1024x768 JPEG: its
page-cache writes cost a 2,000-photo run 1.0-2.0 s of 7.4-10.1, benchmarks/RESULTS.md). Such an entry is valid
only for the same job (``FetchCache(directory, job)``: a resume already requires the same output-deciding
options); another job's processed entries miss, entries holding the download (``put(result)``) serve any job.

Why logs and not a file per URL: creating and renaming a file costs ~0.5 ms of CPU per download on ext4, an
append ~0.03 ms. Crash safety comes from the framing instead of the rename: a run killed mid-write leaves at
most one torn entry at the end of a log, which fails its length or CRC check and is ignored (fetched again).
Each writer (one per shard attempt) has its own log, so concurrent or retried workers never interleave.

Local directories are appended to and flushed after every entry. Object stores (gs://, s3://, through
``aligndata.io.storage``) cannot append and show an object only once it is closed, so there a writer closes its
segment every ``SEGMENT_ENTRIES`` entries or ``SEGMENT_SECONDS`` seconds: a killed worker fetches again at most
that open segment.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from aligndata.fetch.client import FetchResult
from aligndata.io.storage import storage_for

CACHE_DIR_NAME = ".fetch-cache"
_MAGIC = b"ADFC"
# magic, header length, data length, CRC-32 of header + data
_FRAME = struct.Struct("<4sIQI")
_LOG_NAME = re.compile(r"^[0-9a-f]{32}-\d{5}\.log$")
SEGMENT_ENTRIES = 256
SEGMENT_SECONDS = 30.0


def default_cache_dir(output_dir: str) -> str:
    return storage_for(output_dir).join(output_dir, CACHE_DIR_NAME)


def encode_entry(result: FetchResult, processed: dict | None = None, payload: bytes | None = None,
                 job: str = "") -> bytes:
    """One log entry: ``result`` with its downloaded bytes, or (``processed``, a successful download's fields as
    the fetch stage made them, JSON-able) with ``payload``, the processed bytes, and the download's size only."""
    fields = {
        "url": result.url,
        "ok": result.ok,
        "reason": result.reason,
        "detail": result.detail,
        "status": result.status,
        "content_type": result.content_type,
        "final_url": result.final_url,
    }
    if processed is not None and result.ok:
        fields.update(job=job, processed=processed, downloaded=len(result.data))
        data = payload or b""
    else:
        data = result.data if result.ok else b""
    header = json.dumps(fields, sort_keys=True).encode()
    crc = zlib.crc32(data, zlib.crc32(header))
    return b"".join((_FRAME.pack(_MAGIC, len(header), len(data), crc), header, data))


def decode_entries(stream: BinaryIO):
    """(header dict, data offset, data length) for each whole entry of a log, read one entry at a time (a
    shard's log can hold gigabytes), stopping at the first bad one.

    A bad entry (torn by a kill, or not ours) ends the log: what follows cannot be framed reliably.
    """
    pos = 0
    while True:
        frame = stream.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            return
        magic, header_len, data_len, crc = _FRAME.unpack(frame)
        if magic != _MAGIC:
            return
        header_bytes = stream.read(header_len)
        data = stream.read(data_len)
        if len(header_bytes) < header_len or len(data) < data_len:
            return  # torn: the log ends inside this entry
        if zlib.crc32(data, zlib.crc32(header_bytes)) != crc:
            return
        try:
            header = json.loads(header_bytes)
        except ValueError:
            return
        data_offset = pos + _FRAME.size + header_len
        yield header, data_offset, data_len
        pos = data_offset + data_len


def _log_entries(storage, path: str):
    """decode_entries over the log at ``path``; nothing if it cannot be opened (removed meanwhile)."""
    try:
        with storage.open_read(path) as stream:
            yield from decode_entries(stream)
    except Exception:  # removed meanwhile, or unreadable (local: OSError; object stores: their own): no more
        return


@dataclass(frozen=True)
class _Entry:
    path: str
    header: dict
    offset: int
    length: int


@dataclass(frozen=True)
class Cached:
    """A recorded outcome. ``result.data`` is the download, or None where the entry holds ``processed`` (the
    fetch stage's fields of the image it made) and ``payload`` (that image's bytes) instead."""

    result: FetchResult
    downloaded: int  # bytes of the download
    processed: dict | None = None
    payload: bytes | None = None


class FetchCache:
    """The cache directory: ``for_shard(index)`` gives the shard's cache; ``clear()`` removes everything.
    ``job`` names the job whose processed entries are valid here (see the module)."""

    def __init__(self, directory: str, job: str = ""):
        self.directory = directory
        self.job = job
        self.storage = storage_for(directory)

    def for_shard(self, shard: int) -> ShardCache:
        return ShardCache(self, shard)

    def shard_directory(self, shard: int) -> str:
        return self.storage.join(self.directory, f"{shard:05d}")

    def log_paths(self, shard: int | None = None) -> list[str]:
        """The logs of one shard, or of all shards (``DIR/*/NAME.log``), in name order."""
        storage = self.storage
        directory, depth = (self.directory, 1) if shard is None else (self.shard_directory(shard), 0)
        top = storage.parent(storage.join(directory, "x"))  # how the backend names `directory` as a parent

        def wanted(path: str) -> bool:
            if not _LOG_NAME.match(storage.basename(path)):
                return False
            parent = storage.parent(path)
            for _ in range(depth):
                parent = storage.parent(parent)
            return parent == top

        try:
            return sorted(p for p in storage.list_files(directory) if wanted(p))
        except Exception:  # no such directory: nothing cached yet
            return []

    def count(self) -> int:
        """Whole entries in all logs (what a resumed run would not fetch again)."""
        return sum(1 for path in self.log_paths() for _ in _log_entries(self.storage, path))

    def clear(self) -> None:
        self.storage.delete_tree(self.directory)


class ShardCache:
    """One shard's recorded outcomes (read once, at the start) and its log writer; thread-safe ``put``.

    Use as a context manager so the log is closed (and, on an object store, its last segment published).
    """

    def __init__(self, cache: FetchCache, shard: int):
        self.directory = cache.shard_directory(shard)
        self._storage = cache.storage
        self._job = cache.job
        self._writer_id = uuid.uuid4().hex
        self._entries: dict[str, _Entry] = {}
        for path in cache.log_paths(shard):
            for header, offset, length in _log_entries(self._storage, path):
                if "processed" in header and header.get("job") != cache.job:
                    continue  # another job's processing: only its downloads would be valid here, and it has none
                self._entries.setdefault(header["url"], _Entry(path, header, offset, length))
        self._lock = threading.Lock()
        self._file = None
        self._segment = 0
        self._segment_entries = 0
        self._segment_opened = 0.0

    def __enter__(self) -> ShardCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str) -> Cached | None:
        """The recorded outcome for ``url``, or None (then it is fetched)."""
        entry = self._entries.get(url)
        if entry is None:
            return None
        header = entry.header
        data = None
        if header["ok"]:
            data = _read_range(self._storage, entry.path, entry.offset, entry.length) if entry.length else b""
            if data is None or len(data) != entry.length:
                return None  # the log vanished or shrank under us: fetch again
        processed = header.get("processed")
        result = FetchResult(
            url=url,
            ok=header["ok"],
            data=data if processed is None else None,
            reason=header["reason"],
            detail=header["detail"],
            status=header["status"],
            content_type=header["content_type"],
            final_url=header["final_url"],
            attempts=0,  # nothing was requested this time
        )
        if processed is None:
            return Cached(result, len(data or b""))
        return Cached(result, header["downloaded"], processed, data or None)

    def put(self, result: FetchResult, processed: dict | None = None, payload: bytes | None = None) -> None:
        """Record ``result``; for a successful download, ``processed`` and ``payload`` instead of its bytes."""
        entry = encode_entry(result, processed, payload, self._job)
        with self._lock:
            if self._file is None:
                self._open_segment()
            self._file.write(entry)
            self._file.flush()  # a SIGKILL now loses nothing: the bytes are in the OS
            self._segment_entries += 1
            if not self._storage.appendable and (self._segment_entries >= SEGMENT_ENTRIES
                                    or time.monotonic() - self._segment_opened >= SEGMENT_SECONDS):
                self._file.close()  # an object store publishes the segment on close
                self._file = None
                self._segment += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open_segment(self) -> None:
        path = self._storage.join(self.directory, f"{self._writer_id}-{self._segment:05d}.log")
        if self._storage.appendable:
            self._file = self._storage.open_append(path)
        else:
            self._file = self._storage.open_write(path)  # an object, published when closed
        self._segment_entries = 0
        self._segment_opened = time.monotonic()


def _read_range(storage, path: str, offset: int, length: int) -> bytes | None:
    try:
        return storage.read_range(path, offset, length)
    except Exception:
        return None

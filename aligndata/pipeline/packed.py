"""The compact forms a row and its decisions take across the curate pipeline's shuffles.

A row's text and extra columns cross ONE shuffle, packed into one bytes object (its *record*, keyed by its
ledger part); every group that decides a rule carries fixed-size bytes instead: 128-bit keys, the input
position, a one-byte reason code and, only where a rule produced one, its detail. On the local runner a
GroupByKey holds its values as Python objects, so one bytes object a row (payload + 33 bytes) instead of a dict
(~1 KB with its strings and keys) is what keeps memory per row small; on Flink and Dataflow it is what the
shuffle writes to disk and sends over the network.

Positions are packed big-endian, so records of one part sort by input position as plain bytes.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from hashlib import blake2b

from aligndata.filters import registry
from aligndata.pipeline.candidates import make_uid

RECORD, VERDICT = b"R", b"V"  # first byte of a ledger-part value: a batch of records, or of verdicts
KEEP = 0  # the reason code of a row that passed every rule so far
REASON_CODE = {reason: code for code, reason in enumerate(registry.REASONS, 1)}
REASON_OF = (None, *registry.REASONS)
assert len(REASON_OF) < 256  # one byte

_ROW = struct.Struct(">Q")
_LEN = struct.Struct(">I")
TEXT_ROW = struct.Struct(">16s16sIQB")  # url key, uid, src, row, code: a valid row in its text group
PAIR_ROW = struct.Struct(">16sQIQB")  # url key, text hash, src, row, code (+ detail): a row in its pair group
URL_ROW = struct.Struct(">QIQB")  # text hash, src, row, code (+ detail): a pair's first row in its URL group
_VERDICT = struct.Struct(">QB")  # row, code (+ detail)


def url_key(url: str) -> bytes:
    """The URL group's key: 128 bits of BLAKE2b (two distinct URLs in 1.8B share one with odds ~1e-20)."""
    return blake2b(url.encode("utf-8", errors="surrogatepass"), digest_size=16).digest()


def uid_bytes(uid_hex: str) -> bytes:
    return bytes.fromhex(uid_hex)


def pack_record(cand: dict, code: int, final: bool) -> bytes:
    """A row's record: what the ledgers and the fetch stage need, and the verdict when it is already ``final``."""
    body = (cand["url"], cand["caption"], cand.get("page_url"), cand.get("extra") or None, code, cand["detail"],
            final)
    return _ROW.pack(cand["row"]) + pickle.dumps(body, protocol=5)


def unpack_record(src: int, record: bytes) -> tuple[dict, int, str, bool]:
    """(row dict with uid, url, caption, page_url, extra, src, row; code; detail; final)."""
    (row,) = _ROW.unpack_from(record)
    url, caption, page_url, extra, code, detail, final = pickle.loads(memoryview(record)[_ROW.size:])
    # the uid is recomputed: 17 bytes fewer a row in the shuffle
    out = {"uid": make_uid(url, caption), "url": url, "caption": caption, "page_url": page_url,
           "extra": extra or {}, "src": src, "row": row}
    return out, code, detail, final


def pack_verdict(row: int, code: int, detail: bytes = b"") -> bytes:
    """A row's final verdict. An empty detail means: the record's own (the row rule that failed)."""
    return _VERDICT.pack(row, code) + detail


def unpack_verdict(value: bytes) -> tuple[int, int, bytes]:
    row, code = _VERDICT.unpack_from(value)
    return row, code, value[_VERDICT.size:]


def row_of(item: bytes) -> int:
    """The input position a record or verdict starts with."""
    return _ROW.unpack_from(item)[0]


def pack_batch(tag: bytes, items: list[bytes]) -> bytes:
    """Many records (or verdicts) of one part as one value, sorted by input position and compressed: one object
    in the shuffle instead of one per row (on the local runner each costs ~100 bytes of bookkeeping besides its
    payload), and URLs and captions of one batch compress ~2-3x at zlib's fastest level (~1 us a row)."""
    items.sort()  # big-endian positions: bytes order is input order
    return tag + zlib.compress(b"".join(_LEN.pack(len(item)) + item for item in items), 1)


def iter_batch(batch: bytes):
    """The items of a batch, decompressed a piece at a time: merging hundreds of batches of one part holds
    about one piece (STREAM_PIECE bytes) of each, not the part uncompressed."""
    stream = zlib.decompressobj()
    pending = memoryview(batch)[1:]
    buffer = b""
    at = 0
    while True:
        if len(buffer) - at < _LEN.size or len(buffer) - at < _LEN.size + _LEN.unpack_from(buffer, at)[0]:
            if not pending and not stream.unconsumed_tail:
                piece = stream.flush()  # whatever output the last input still held
                if not piece:
                    if at != len(buffer):
                        raise ValueError("truncated batch")
                    return
            else:
                piece = stream.decompress(stream.unconsumed_tail or pending, STREAM_PIECE)
            pending = b""
            buffer = buffer[at:] + piece
            at = 0
            continue
        (n,) = _LEN.unpack_from(buffer, at)
        yield buffer[at + _LEN.size:at + _LEN.size + n]
        at += _LEN.size + n


STREAM_PIECE = 65_536


class PartBatcher:
    """Per-bundle buffers of items by ledger part, flushed as batches: at most ``max_items`` items held."""

    def __init__(self, tag: bytes, max_items: int = 100_000, batch_items: int = 4096):
        self.tag, self.max_items, self.batch_items = tag, max_items, batch_items
        self.parts: dict = {}
        self.held = 0

    def add(self, part, item: bytes):
        """Returns the (part, batch) pairs that are due now (possibly none)."""
        items = self.parts.setdefault(part, [])
        items.append(item)
        self.held += 1
        if len(items) >= self.batch_items:
            self.held -= len(items)
            del self.parts[part]
            return [(part, pack_batch(self.tag, items))]
        if self.held >= self.max_items:
            return self.flush()
        return ()

    def flush(self):
        out = [(part, pack_batch(self.tag, items)) for part, items in self.parts.items()]
        self.parts, self.held = {}, 0
        return out

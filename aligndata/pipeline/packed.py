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
from hashlib import blake2b

from aligndata.filters import registry
from aligndata.pipeline.candidates import make_uid

RECORD, VERDICT = b"R", b"V"  # first byte of a ledger-part value
KEEP = 0  # the reason code of a row that passed every rule so far
REASON_CODE = {reason: code for code, reason in enumerate(registry.REASONS, 1)}
REASON_OF = (None, *registry.REASONS)
assert len(REASON_OF) < 256  # one byte

_ROW = struct.Struct(">Q")
TEXT_ROW = struct.Struct(">16s16sIQ")  # url key, uid, src, row: a passing row in its text group
PAIR_ROW = struct.Struct(">16sQIQB")  # url key, text hash, src, row, code (+ detail): a row in its uid group
URL_ROW = struct.Struct(">QIQB")  # text hash, src, row, code (+ detail): a row in its URL group
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
    return RECORD + _ROW.pack(cand["row"]) + pickle.dumps(body, protocol=5)


def unpack_record(src: int, record: bytes) -> tuple[dict, int, str, bool]:
    """(row dict with uid, url, caption, page_url, extra, src, row; code; detail; final)."""
    (row,) = _ROW.unpack_from(record, 1)
    url, caption, page_url, extra, code, detail, final = pickle.loads(memoryview(record)[1 + _ROW.size:])
    # the uid is recomputed: 17 bytes fewer a row in the shuffle
    out = {"uid": make_uid(url, caption), "url": url, "caption": caption, "page_url": page_url,
           "extra": extra or {}, "src": src, "row": row}
    return out, code, detail, final


def pack_verdict(row: int, code: int, detail: bytes = b"") -> bytes:
    """A row's final verdict. An empty detail means: the record's own (the row rule that failed)."""
    return VERDICT + _VERDICT.pack(row, code) + detail


def unpack_verdict(value: bytes) -> tuple[int, int, bytes]:
    row, code = _VERDICT.unpack_from(value, 1)
    return row, code, value[1 + _VERDICT.size:]

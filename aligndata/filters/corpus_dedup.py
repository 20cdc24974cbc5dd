"""Duplicates inside the corpus: the pure pieces of ``aligndata dedup`` (``pipeline/dedup_job.py`` runs them as a
Beam job; this module is plain Python and numpy).

Two samples are duplicates when their fetched bytes are identical (same ``sha256``) or, unless exact-only, when
their pHashes are within Hamming distance T; groups are the connected components of that relation (transitive:
a ~ b and b ~ c put a, b and c in one group). Identical bytes give identical pHashes (the pHash is a function of
the bytes), so in near mode a *vertex* of the near graph is one distinct pHash value and every sample with that
pHash hangs off it; in exact-only mode a vertex is one distinct sha256.

Banding (the multi-index scheme of ``filters/dedup.py``, distributed)
--------------------------------------------------------------------
Split the 64 bits into T + 1 contiguous bands. Two hashes within T differ in at most T bits, so (pigeonhole) at
least one band is identical: grouping the distinct pHashes by (band, band value) puts every near pair into at
least one common *bucket*, and verifying pairs inside buckets finds them all. A bucket of uniform hashes holds
about N / 2**(64 / (T + 1)) of the N distinct pHashes (T = 4: N / 4096..8192). A bucket keeps at most
``max_band_size`` members (the smallest values, so the choice does not depend on arrival order); the rest are
left out of that band's verification and counted, never silently: a pair they form is still found in any other
band they share, and the summary reports how many were left out.

Inside a bucket, pairs are verified by blocked brute-force popcount (small buckets) or with the exact
:class:`~aligndata.filters.dedup.HammingIndex` over the bits outside the shared band (large ones). Neither
lists all pairs at once: each block of pairs is merged into a union-find forest over the bucket's members, and
the bucket emits one *star* per local component (root = smallest value, an edge to every other member), at most
members - 1 edges however dense the bucket. The union of every bucket's stars has the same connected components
as the near graph.

The keep rule
-------------
One sample per group is kept: the one whose caption (lowercased, as curate's text rules count texts) is shared
by the most members of its group; ties go to the smallest uid. It costs two combines with O(1) state: (group,
caption) -> (count, smallest uid), then group -> the best of those.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from aligndata.filters.dedup import HammingIndex, _split
from aligndata.filters.frequency import hash64

BITS = 64
# Measured on the 159 real COCO photos with docs/dedup.md's transformed copies (benchmarks/corpus_dedup_accuracy.py):
# T = 4 finds as many half-size, JPEG q30 and brightness copies as T = 6, while its modelled false-positive rate
# per pair is ~100x lower, which is what counts when every sample is compared with every other (docs/dedup.md).
DEFAULT_CORPUS_HAMMING = 4
MAX_HAMMING = 16  # unrelated real photos already match at 14-16 (docs/dedup.md); T + 1 bands of >= 3 bits
# A bucket keeps at most this many distinct pHashes: bounds one worker's memory (8 bytes a member: 1.6 MB, 3.2 MB
# while combining) and its verification work (the index's search, sub-linear for spread-out hashes; at most
# n**2 / 2 popcounts for a dense cluster). Uniform buckets hold N / 2**(64 / (T + 1)) of N distinct pHashes: at
# T = 4 (12-13 bit bands) none reaches it below ~800M distinct pHashes, at T = 6 (9-10 bits) below ~100M.
DEFAULT_MAX_BAND_SIZE = 200_000
# Rounds of min-label propagation (pipeline/components.py) for transitive groups; each is cheap when nothing
# changes, and the summary says when the last one still changed labels.
DEFAULT_MAX_ROUNDS = 16
SMALL_BUCKET = 16  # buckets up to this size are verified in plain Python (numpy's per-call cost dominates)
BRUTE_FORCE_MAX = 4096  # buckets up to this size are verified by blocked popcount; larger ones with the index
_BLOCK_ELEMENTS = 1 << 20  # pairs compared per numpy block: bounds the temporary arrays (~8 MB each)
_PAIRS_PER_UNION = 1 << 20  # index hits merged into the forest this many at a time
# A vertex's samples meet its group id in at most SALTS groups (keyed by vertex and a hash of the uid), so a
# pHash shared by millions of placeholder images is delivered in SALTS pieces, never in one group.
SALTS = 4096
_SALT_LIST_MAX = 32  # salts kept as a sorted tuple up to this many; above, a SALTS-bit bitmap (512 bytes)
ROW_BITS = 32  # position = shard index << ROW_BITS | row within the shard's parquet


# ---------------------------------------------------------------------------------------------- samples


def position(shard: int, row: int) -> int:
    """A sample's place in SHARDS: unique, ordered like the shard list, and an int64 (the group ids)."""
    if not 0 <= row < 1 << ROW_BITS or not 0 <= shard < 1 << (63 - ROW_BITS):
        raise ValueError(f"shard {shard} row {row} does not fit a position")
    return shard << ROW_BITS | row


def split_position(pos: int) -> tuple[int, int]:
    return pos >> ROW_BITS, pos & ((1 << ROW_BITS) - 1)


def caption_key(caption: str | None) -> int:
    """The caption as the keep rule counts it: hash64 of the lowercased text (curate's text key)."""
    return hash64((caption or "").lower())


def salt_of(uid: bytes) -> int:
    """The salt of a sample: 12 bits of a hash of its uid (UTF-8)."""
    return zlib.crc32(uid) % SALTS


def phash_bytes(text) -> bytes:
    """The shard's hex ``phash`` -> its 8 bytes, big-endian (a vertex key; unsigned order = byte order);
    ValueError for anything but 1..16 hex digits."""
    if not isinstance(text, str) or not 0 < len(text) <= BITS // 4:
        raise ValueError(f"not a 64-bit hex pHash: {text!r}")
    raw = bytes.fromhex(text.rjust(BITS // 4, "0"))  # strict hex: no sign, "0x" or "_"; whitespace shortens it
    if len(raw) != BITS // 8:
        raise ValueError(f"not a 64-bit hex pHash: {text!r}")
    return raw


def parse_phash(text) -> int:
    """The shard's hex ``phash`` -> int; ValueError for anything that is not 1..16 hex digits."""
    return int.from_bytes(phash_bytes(text), "big")


def parse_sha256(text) -> bytes:
    try:
        digest = bytes.fromhex(text) if isinstance(text, str) and len(text) == 64 else b""
    except ValueError:
        digest = b""
    if len(digest) != 32:  # (whitespace inside would shorten it)
        raise ValueError(f"not a hex sha256: {text!r}")
    return digest


# ------------------------------------------------------------------------------------------------ salts
# The set of salts a vertex's samples carry (so its group id is sent only where samples wait for it): a sorted
# tuple while small, a bitmap of SALTS bits (bytes) above _SALT_LIST_MAX. Either way O(1) state: <= 512 bytes.


def salts_add(salts, more) -> tuple | bytes:
    """``salts`` (a tuple or bitmap) with the salts of ``more`` (an int, a tuple or a bitmap) added."""
    if isinstance(more, int):
        if isinstance(salts, tuple):
            if more in salts:
                return salts
            if len(salts) < _SALT_LIST_MAX:
                return tuple(sorted(salts + (more,)))
        more = (more,)
    if isinstance(salts, tuple) and isinstance(more, tuple):
        merged = tuple(sorted(set(salts).union(more)))
        if len(merged) <= _SALT_LIST_MAX:
            return merged
    bitmap = np.zeros(SALTS // 8, dtype=np.uint8) if isinstance(salts, tuple) else np.frombuffer(salts, np.uint8).copy()
    for part in (salts, more):
        if isinstance(part, tuple):
            if part:
                bits = np.zeros(SALTS, dtype=bool)
                bits[list(part)] = True
                bitmap |= np.packbits(bits)
        else:
            bitmap |= np.frombuffer(part, np.uint8)
    return bitmap.tobytes()


def salts_list(salts) -> list[int]:
    if isinstance(salts, tuple):
        return list(salts)
    return np.flatnonzero(np.unpackbits(np.frombuffer(salts, np.uint8))).tolist()


# ------------------------------------------------------------------------------------------------- bands


def band_ranges(radius: int) -> list[tuple[int, int]]:
    """T + 1 contiguous bit ranges [start, end) of the 64 bits (most significant first), sizes within one bit."""
    if not 0 <= radius <= MAX_HAMMING:
        raise ValueError(f"Hamming distance must be within 0..{MAX_HAMMING}, got {radius}")
    return _split(BITS, radius + 1)


def band_of(values: np.ndarray, start: int, end: int) -> np.ndarray:
    """Bits [start, end) of each uint64 value, as uint64."""
    return (values >> np.uint64(BITS - end)) & np.uint64((1 << (end - start)) - 1)


def band_batches(values: np.ndarray, ranges) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """((band, band value), the values in that bucket) for every bucket the distinct uint64 ``values`` touch."""
    for band, (start, end) in enumerate(ranges):
        keys = band_of(values, start, end)
        order = np.argsort(keys, kind="stable")
        keys, members = keys[order], values[order]
        cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        for lo, hi in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(keys)]))):
            yield (band, int(keys[lo])), members[lo:hi]


def capped_members(chunks: list[np.ndarray], cap: int) -> np.ndarray:
    """The ``cap`` smallest distinct values of the chunks, sorted: what a bucket keeps, whatever the order."""
    if len(chunks) == 1 and len(chunks[0]) <= cap and (len(chunks[0]) < 2 or (chunks[0][1:] > chunks[0][:-1]).all()):
        return chunks[0]  # one sorted batch (band_batches' order): the common case, without a sort
    values = np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.uint64)
    return values[:cap]


# ------------------------------------------------------------------------------------- local components


def compress(parent: np.ndarray) -> None:
    """Point every entry of a forest with parent[x] <= x straight at its root (in place)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def union_pairs(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the components of every pair (a[i], b[i]); roots stay the smallest index (parent[x] <= x)."""
    while len(a):
        compress(parent)
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))  # hook a root under a smaller one


def _brute_force_pairs(values: np.ndarray, radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) index pairs, i < j, within ``radius``, a block of rows at a time (each block <= _BLOCK_ELEMENTS)."""
    n = len(values)
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n - 1, rows):
        block = values[start:start + rows]
        near = np.bitwise_count(block[:, None] ^ values[None, start:]) <= radius
        i, j = np.nonzero(near)
        j += start
        i += start
        upper = i < j
        yield i[upper], j[upper]


def _outside_band(values: np.ndarray, band: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """The bits outside ``band`` (which a bucket's members share), packed left-aligned: (values, bit count)."""
    if band is None:
        return values, BITS
    start, end = band
    width, low_bits = end - start, BITS - end
    high = values >> np.uint64(BITS - start) if start else np.zeros_like(values)  # bits [0, start)
    low = values & np.uint64((1 << low_bits) - 1) if low_bits else np.zeros_like(values)  # bits [end, 64)
    packed = (high << np.uint64(low_bits)) | low
    bits = BITS - width
    return packed << np.uint64(BITS - bits), bits  # left-aligned, as hashes_to_array lays out hashes


def _index_pairs(values: np.ndarray, radius: int, band) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The same pairs found with the exact multi-index search over the bits outside the shared band."""
    rest, bits = _outside_band(values, band)
    index = HammingIndex(rest[:, None], bits, radius)
    shift = BITS - bits
    found_i, found_j, held = [], [], 0
    for i, value in enumerate(rest.tolist()):
        entries, _ = index.search(value >> shift)
        later = entries[entries > i]
        if len(later):
            found_i.append(np.full(len(later), i, dtype=np.int64))
            found_j.append(later)
            held += len(later)
        if held >= _PAIRS_PER_UNION:
            yield np.concatenate(found_i), np.concatenate(found_j)
            found_i, found_j, held = [], [], 0
    if found_i:
        yield np.concatenate(found_i), np.concatenate(found_j)


def near_components(values: np.ndarray, radius: int, band: tuple[int, int] | None = None,
                    method: str = "auto") -> tuple[np.ndarray, int]:
    """Connected components of the distinct sorted uint64 ``values`` under "within ``radius``".

    Returns (root of each member as an index: the smallest index of its component, number of pairs found).
    ``band``: the bit range every member shares (a bucket's band), left out of the index's search. ``method``:
    "brute" (blocked popcount), "index" (HammingIndex) or "auto" (brute up to BRUTE_FORCE_MAX members).
    """
    n = len(values)
    parent = np.arange(n, dtype=np.int64)
    if n < 2:
        return parent, 0
    if method == "auto":
        method = "brute" if n <= BRUTE_FORCE_MAX else "index"
    blocks = _brute_force_pairs(values, radius) if method == "brute" else _index_pairs(values, radius, band)
    pairs = 0
    for i, j in blocks:
        if len(i):
            pairs += len(i)
            union_pairs(parent, i, j)
    if pairs:  # most buckets of uniform hashes hold no pair at all
        compress(parent)
    return parent, pairs


def star_edges(values: np.ndarray, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(root value, member value) for every member that is not its component's root."""
    members = np.flatnonzero(roots != np.arange(len(roots)))
    return values[roots[members]], values[members]


def small_bucket_edges(values: list[int], radius: int) -> tuple[list[tuple[int, int]], int]:
    """:func:`near_components` + :func:`star_edges` for a few values (any order), in plain Python: ((root,
    member) edges, pairs within ``radius``). Most buckets hold one to three distinct pHashes."""
    values = sorted(values)
    n = len(values)
    root = list(range(n))
    pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            if (values[i] ^ values[j]).bit_count() <= radius:
                pairs += 1
                a, b = root[i], root[j]
                while root[a] != a:
                    a = root[a]
                while root[b] != b:
                    b = root[b]
                if a != b:
                    root[max(a, b)] = min(a, b)
    edges = []
    for i in range(n):
        r = i
        while root[r] != r:
            r = root[r]
        if r != i:
            edges.append((values[r], values[i]))
    return edges, pairs


def bucket_edges(values: np.ndarray, radius: int, band: tuple[int, int] | None) -> tuple[list, list, int]:
    """One bucket's verification: (root values, member values, pairs within ``radius``) of its star edges.
    ``values``: the bucket's distinct members in any order (the combine's order is arbitrary; the edges are
    not)."""
    if len(values) <= SMALL_BUCKET:
        edges, pairs = small_bucket_edges(values.tolist(), radius)
        return [a for a, _ in edges], [b for _, b in edges], pairs
    values = np.sort(values)
    roots, pairs = near_components(values, radius, band)
    if not pairs:
        return [], [], 0
    roots_at, members_at = star_edges(values, roots)
    return roots_at.tolist(), members_at.tolist(), pairs


# ---------------------------------------------------------------------------------------------- keep rule


def better_vote(a: tuple[int, str] | None, b: tuple[int, str] | None) -> tuple[int, str] | None:
    """The keep rule on two (members sharing a caption, smallest uid with it): more members, then smaller uid."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a[0] > b[0] or (a[0] == b[0] and a[1] <= b[1])) else b

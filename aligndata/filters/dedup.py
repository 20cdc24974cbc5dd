"""Eval-set near-duplicates: perceptual hashes and an exact, sub-linear Hamming-radius index.

ALIGN dropped training images that are near-duplicates of evaluation test images (ILSVRC-2012, Flickr30K,
MSCOCO). We use perceptual hashes (imagehash) instead of ALIGN's learned embedding: an eval image is hashed as
is and mirrored, and a fetched image is a near-duplicate when its hash is within Hamming distance T of either.

Hashes
------
A hash is a Python ``int`` of ``bits = size * size`` bits, the most significant bit first, exactly as
``int(str(imagehash_value), 16)``: so the pipeline's hex ``phash`` (``filters.image.perceptual_hash``, taken on
the decoded image before resizing) is parsed with ``int(hex, 16)`` and compared directly. The default kind,
``phash`` at size 8 (64 bits), is computed through ``perceptual_hash`` itself so both sides share one code path.

Index (multi-index hashing, Norouzi et al., CVPR 2012)
------------------------------------------------------
Split the ``bits`` into ``m`` contiguous substrings. If two hashes differ in at most T bits, at least one
substring differs in at most ``r = T // m`` bits (pigeonhole). With ``m = T + 1`` this is ``r = 0``: some
substring agrees exactly. For each substring we keep the entries' substring values sorted (a compact numpy
array, plus the entry order); a query looks up every value within ``r`` flips of its own substring value
(``searchsorted``), and verifies the candidates' full distance with popcount. The answer is exact: every entry
within T is found, and nothing farther is returned.

``m = T + 1`` gives few, short substrings when T is large (T = 10 on 64 bits: 11 substrings of ~6 bits, each
bucket holding N/64 entries), so by default ``m`` is chosen by a small cost model: substrings of about log2(N)
bits, each searched within radius ``r``. ``substrings=T + 1`` forces the plain pigeonhole scheme.

Memory: the hashes (8 bytes per 64 bits per entry) plus, per substring, the sorted values in the narrowest
unsigned dtype and an int32 entry order. Nothing is a Python object per entry, and the lookup tables are
rebuilt from the hashes (not pickled), so the index travels cheaply to workers.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from itertools import combinations

import imagehash
import numpy as np
from PIL import Image, ImageOps

from aligndata.filters.image import perceptual_hash

# Chosen from the accuracy table in docs/dedup.md: pHash within 6 bits finds >= 99.4% of half-size, JPEG q30,
# flipped and +-10% brightness copies of real photos; 0 of 25,122 unrelated real photo pairs match, and the
# modelled false-positive rate per fetched image against 200k eval images is 0.002% (0.006% allowing for the
# 3x heavier tail than the model seen at T=14). T=8 would catch more crops but models at 0.08-0.3%.
DEFAULT_EVAL_HAMMING = 6
_MASK64 = (1 << 64) - 1
# Substrings up to this many bits get a direct-address table (2**bits + 1 int32 offsets, 64 MiB at 24).
DIRECT_TABLE_BITS = 24
# Refuse a split whose neighbour enumeration per substring exceeds this (it would be slower than a scan).
MAX_PROBES = 200_000

# imagehash functions by the names users type. phash is the default and the pipeline's hash.
HASH_FUNCTIONS = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
HASH_KINDS = tuple(HASH_FUNCTIONS)


@dataclass(frozen=True)
class HashSpec:
    """Which perceptual hash: ``kind`` (one of HASH_KINDS) at ``size`` (``size * size`` bits)."""

    kind: str = "phash"
    size: int = 8

    def __post_init__(self) -> None:
        if self.kind not in HASH_FUNCTIONS:
            raise ValueError(f"unknown hash kind {self.kind!r}; expected one of {', '.join(HASH_KINDS)}")
        if not 2 <= self.size <= 64:
            raise ValueError(f"hash size must be within 2..64, got {self.size}")
        if self.kind == "whash" and self.size & (self.size - 1):
            raise ValueError(f"whash needs a power-of-two hash size, got {self.size}")

    @property
    def bits(self) -> int:
        return self.size * self.size

    def hash_image(self, image: Image.Image) -> int:
        """The hash of an RGB image as an int (most significant bit = imagehash's first bit)."""
        if self.kind == "phash":
            return int(perceptual_hash(image, hash_size=self.size), 16)  # the pipeline's own function
        return int(str(HASH_FUNCTIONS[self.kind](image, hash_size=self.size)), 16)

    def hash_with_mirror(self, image: Image.Image) -> tuple[int, int]:
        """(hash of the image, hash of its left-right mirror): a flipped copy matches the mirror entry."""
        return self.hash_image(image), self.hash_image(ImageOps.mirror(image))

    def to_hex(self, value: int) -> str:
        return f"{value:0{math.ceil(self.bits / 4)}x}"

    def parse_hex(self, text: str) -> int:
        """A hex hash (as the pipeline's ``phash`` field) -> int; errors name the value and the expected width."""
        try:
            value = int(text, 16)
        except (TypeError, ValueError):
            raise ValueError(f"not a hex hash: {text!r}") from None
        if value >> self.bits:
            raise ValueError(f"hash {text!r} has more than {self.bits} bits ({self.kind} size {self.size})")
        return value


def words_per_hash(bits: int) -> int:
    return max(1, math.ceil(bits / 64))


def hashes_to_array(values, bits: int) -> np.ndarray:
    """Int hashes -> (n, W) uint64, big-endian words, left-aligned (bit 0 of the hash is bit 63 of word 0)."""
    n_words = words_per_hash(bits)
    pad = n_words * 64 - bits
    values = list(values)
    out = np.zeros((len(values), n_words), dtype=np.uint64)
    if n_words == 1:
        if values:
            out[:, 0] = np.array([v << pad for v in values], dtype=np.uint64)
        return out
    for i, v in enumerate(values):
        v <<= pad
        for w in range(n_words):
            out[i, w] = (v >> (64 * (n_words - 1 - w))) & _MASK64
    return out


def array_row_to_int(row: np.ndarray, bits: int) -> int:
    value = 0
    for word in row.tolist():
        value = (value << 64) | int(word)
    return value >> (len(row) * 64 - bits)


def popcount_distance(hashes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distance of every row of (n, W) uint64 ``hashes`` to a (W,) query, as int64."""
    return np.bitwise_count(hashes ^ query).sum(axis=1, dtype=np.int64)


def brute_force(hashes: np.ndarray, query: np.ndarray, radius: int) -> np.ndarray:
    """Entries within ``radius`` by scanning all rows (the reference the index is tested and benchmarked against)."""
    return np.flatnonzero(popcount_distance(hashes, query) <= radius)


def _split(bits: int, m: int) -> list[tuple[int, int]]:
    """m contiguous bit ranges [start, end) covering 0..bits, sizes differing by at most one."""
    base, extra = divmod(bits, m)
    ranges, start = [], 0
    for j in range(m):
        end = start + base + (1 if j < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def _n_within(length: int, r: int) -> int:
    return sum(math.comb(length, k) for k in range(min(r, length) + 1))


# Cost model of one query, in microseconds, measured on this machine (400k uniform 64-bit entries): a substring
# costs ~10 us of Python and numpy overhead (~3 when it is a single exact bucket), each enumerated probe
# ~0.02 us, each verified candidate ~0.015 us; a brute-force scan ~0.002 us per entry and 64-bit word.
_COST_SUBSTRING, _COST_EXACT_SUBSTRING, _COST_PROBE, _COST_CANDIDATE, _COST_SCAN = 10.0, 3.0, 0.02, 0.015, 0.002


def query_cost(bits: int, radius: int, n_entries: int, m: int) -> float:
    """Estimated microseconds per query with ``m`` substrings (uniform hashes)."""
    r = radius // m
    cost = 0.0
    for start, end in _split(bits, m):
        length = end - start
        probes = _n_within(length, r)
        cost += _COST_EXACT_SUBSTRING if probes == 1 else _COST_SUBSTRING
        cost += probes * (_COST_PROBE if length <= DIRECT_TABLE_BITS else 5 * _COST_PROBE)
        cost += probes * n_entries / 2.0**length * _COST_CANDIDATE
    return cost


def scan_cost(bits: int, n_entries: int) -> float:
    return n_entries * words_per_hash(bits) * _COST_SCAN


def choose_substrings(bits: int, radius: int, n_entries: int) -> int:
    """The number of substrings with the lowest estimated query cost (:func:`query_cost`)."""
    lowest = words_per_hash(bits)  # substrings must fit in 64-bit keys
    highest = max(lowest, min(bits, radius + 1))
    return min(range(lowest, highest + 1), key=lambda m: (query_cost(bits, radius, n_entries, m), m))


def _key_dtype(length: int):
    return np.uint8 if length <= 8 else np.uint16 if length <= 16 else np.uint32 if length <= 32 else np.uint64


class HammingIndex:
    """Exact Hamming-radius search over fixed-width hashes: every entry within ``radius`` of a query, no others.

    ``hashes``: (n, W) uint64 as made by :func:`hashes_to_array`. ``radius`` is the largest distance queries may
    ask for (smaller ones are exact too). ``substrings`` overrides the cost model; ``radius + 1`` is the plain
    pigeonhole scheme (one substring agrees exactly).
    """

    def __init__(self, hashes: np.ndarray, bits: int, radius: int, substrings: int | None = None):
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        if hashes.ndim != 2 or hashes.shape[1] != words_per_hash(bits):
            raise ValueError(f"hashes must have shape (n, {words_per_hash(bits)}) for {bits} bits, got {hashes.shape}")
        if not 0 <= radius <= bits:
            raise ValueError(f"radius must be within 0..{bits}, got {radius}")
        if hashes.shape[0] >= 2**31:
            raise ValueError("too many entries for int32 positions")
        self.hashes = hashes
        self.bits = bits
        self.radius = radius
        m = substrings if substrings is not None else choose_substrings(bits, radius, len(hashes))
        if not words_per_hash(bits) <= m <= bits:
            raise ValueError(f"substrings must be within {words_per_hash(bits)}..{bits} for {bits} bits, got {m}")
        self.substrings = m
        longest = max(end - start for start, end in _split(bits, m))
        if _n_within(longest, radius // m) > MAX_PROBES:
            raise ValueError(f"{m} substrings of {bits} bits within radius {radius} need "
                             f"{_n_within(longest, radius // m)} probes each; use more substrings")
        # Where probing would cost more than reading every hash (tiny indexes; a radius near bits/4), scan: still
        # exact, and never slower than brute force. An explicit ``substrings`` always uses the tables.
        self.scan = substrings is None and query_cost(bits, radius, len(hashes), m) > scan_cost(bits, len(hashes))
        self.sub_radius = radius // m
        self.ranges = _split(bits, m)
        self._tables: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._flips: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    # The tables are derived data: rebuilt after unpickling instead of shipped (a third of the size or more).
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tables"] = None
        state["_flips"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.hashes)

    def _substring_values(self, start: int, end: int) -> np.ndarray:
        """Bits [start, end) of every entry as uint64 (a substring spans at most two words)."""
        length = end - start
        first, last = start // 64, (end - 1) // 64
        mask = np.uint64(_MASK64 if length == 64 else (1 << length) - 1)
        if first == last:
            return (self.hashes[:, first] >> np.uint64(64 * (first + 1) - end)) & mask
        high = self.hashes[:, first] << np.uint64(end - 64 * last)
        low = self.hashes[:, last] >> np.uint64(64 * (last + 1) - end)
        return (high | low) & mask

    def build(self) -> None:
        """Build the substring tables (done on first query; thread-safe).

        A substring of at most DIRECT_TABLE_BITS bits gets a direct-address table (CSR): ``order`` lists the
        entries sorted by substring value and ``offsets[v]:offsets[v + 1]`` is the slice holding value v, so a
        probe is one array read. With substrings of ~log2(N) bits the offsets cost about as much as ``order``.
        Longer substrings keep their sorted values and use binary search.
        """
        with self._lock:
            if self._tables is not None or self.scan:
                return
            tables = []
            for start, end in self.ranges:
                length = end - start
                values = self._substring_values(start, end)
                order = np.argsort(values, kind="stable").astype(np.int32)
                if length <= DIRECT_TABLE_BITS:
                    counts = np.bincount(values.astype(np.int64), minlength=1 << length)
                    offsets = np.zeros((1 << length) + 1, dtype=np.int32)
                    np.cumsum(counts, out=offsets[1:])
                    tables.append((None, offsets, order))
                else:
                    tables.append((values[order].astype(_key_dtype(length)), None, order))
                if length not in self._flips:
                    self._flips[length] = self._flip_masks(length)
            self._tables = tables

    def _flip_masks(self, length: int) -> np.ndarray:
        """Every XOR mask of ``length`` bits with at most ``sub_radius`` bits set (0 first)."""
        masks = [0]
        for k in range(1, min(self.sub_radius, length) + 1):
            masks.extend(sum(1 << b for b in bits) for bits in combinations(range(length), k))
        return np.array(masks, dtype=np.uint64).astype(_key_dtype(length))

    def memory_bytes(self) -> int:
        """Bytes held in numpy arrays (hashes + tables once built)."""
        total = self.hashes.nbytes
        for table in self._tables or ():
            total += sum(a.nbytes for a in table if a is not None)
        return total + sum(f.nbytes for f in self._flips.values())

    def query_words(self, value: int) -> np.ndarray:
        n_words = words_per_hash(self.bits)
        padded = value << (n_words * 64 - self.bits)
        return np.array([(padded >> (64 * (n_words - 1 - w))) & _MASK64 for w in range(n_words)], dtype=np.uint64)

    def search(self, value: int, radius: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(entries, distances) of every entry within ``radius`` (default: the index's), sorted by (distance, entry)."""
        radius = self.radius if radius is None else radius
        if not 0 <= radius <= self.radius:
            raise ValueError(f"this index answers radius 0..{self.radius} exactly, asked for {radius}")
        if value < 0 or value >> self.bits:
            raise ValueError(f"query has more than {self.bits} bits")
        if self.scan:
            distances = popcount_distance(self.hashes, self.query_words(value))
            within = np.flatnonzero(distances <= radius)
            within_d = distances[within]
            by_distance = np.argsort(within_d, kind="stable")
            return within[by_distance].astype(np.int64), within_d[by_distance]
        if self._tables is None:
            self.build()
        total_bits = words_per_hash(self.bits) * 64
        padded = value << (total_bits - self.bits)
        found = []
        for (start, end), (keys, offsets, order) in zip(self.ranges, self._tables):
            length = end - start
            sub = (padded >> (total_bits - end)) & ((1 << length) - 1)
            flips = self._flips[length]
            if len(flips) == 1:  # exact substring match: one bucket
                if offsets is not None:
                    lo, hi = int(offsets[sub]), int(offsets[sub + 1])
                else:
                    lo = int(np.searchsorted(keys, sub, "left"))
                    hi = int(np.searchsorted(keys, sub, "right"))
                if hi > lo:
                    found.append(order[lo:hi])
                continue
            probes = flips ^ flips.dtype.type(sub)
            if offsets is not None:
                probes = probes.astype(np.int64)
                lo, hi = offsets[probes], offsets[probes + 1]
            else:
                lo, hi = np.searchsorted(keys, probes, "left"), np.searchsorted(keys, probes, "right")
            sizes = hi - lo
            hit = sizes > 0
            if not hit.any():
                continue
            lo, sizes = lo[hit], sizes[hit]
            # positions lo[i] .. lo[i]+sizes[i]-1 for every probe that hit, without a Python loop
            ends = np.cumsum(sizes)
            positions = np.arange(ends[-1]) + np.repeat(lo - (ends - sizes), sizes)
            found.append(order[positions])
        if not found:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        candidates = found[0] if len(found) == 1 else np.concatenate(found)
        distances = popcount_distance(self.hashes[candidates], self.query_words(value))
        keep = distances <= radius
        within, within_d = candidates[keep].astype(np.int64), distances[keep]
        if len(within) > 1:  # an entry may be found through several substrings: once, by (distance, entry)
            within, first = np.unique(within, return_index=True)
            within_d = within_d[first]
            by_distance = np.argsort(within_d, kind="stable")
            within, within_d = within[by_distance], within_d[by_distance]
        return within, within_d


@dataclass(frozen=True)
class EvalMatch:
    """The nearest eval image: its id, the Hamming distance, and whether the mirrored entry matched."""

    eval_id: str
    distance: int
    mirrored: bool

    def detail(self) -> str:
        return f"{self.eval_id} d={self.distance}{' mirrored' if self.mirrored else ''}"


class EvalHashes:
    """Eval images' ids and hashes (each also mirrored), searchable within Hamming distance ``radius``.

    Ids are kept as one UTF-8 blob plus offsets (no Python string per image until one is reported). Entry e of
    the index is image ``e % n``; entries ``n..2n-1`` are the mirrors.
    """

    def __init__(self, spec: HashSpec, ids_blob: bytes, id_offsets: np.ndarray, hashes: np.ndarray,
                 mirror_hashes: np.ndarray, radius: int, substrings: int | None = None):
        n = len(id_offsets) - 1
        if hashes.shape != mirror_hashes.shape or len(hashes) != n:
            raise ValueError(f"{n} ids but {len(hashes)} hashes and {len(mirror_hashes)} mirror hashes")
        self.spec = spec
        self.ids_blob = ids_blob
        self.id_offsets = np.asarray(id_offsets, dtype=np.int64)
        self.index = HammingIndex(np.concatenate([hashes, mirror_hashes]), spec.bits, radius, substrings)

    @classmethod
    def from_ids(cls, spec: HashSpec, ids: list[str], hashes: list[int], mirror_hashes: list[int], radius: int,
                 substrings: int | None = None) -> "EvalHashes":
        blob, offsets = encode_ids(ids)
        return cls(spec, blob, offsets, hashes_to_array(hashes, spec.bits), hashes_to_array(mirror_hashes, spec.bits),
                   radius, substrings)

    def __len__(self) -> int:
        return len(self.id_offsets) - 1

    @property
    def radius(self) -> int:
        return self.index.radius

    def eval_id(self, i: int) -> str:
        return self.ids_blob[self.id_offsets[i]:self.id_offsets[i + 1]].decode("utf-8")

    def match(self, value: int, radius: int | None = None) -> EvalMatch | None:
        """The closest eval image within ``radius`` (ties: the earlier image, unmirrored first), or None."""
        entries, distances = self.index.search(value, radius)
        if len(entries) == 0:
            return None
        n = len(self)
        entry, distance = int(entries[0]), int(distances[0])
        return EvalMatch(self.eval_id(entry % n), distance, entry >= n)

    def memory_bytes(self) -> int:
        return self.index.memory_bytes() + len(self.ids_blob) + self.id_offsets.nbytes


def encode_ids(ids: list[str]) -> tuple[bytes, np.ndarray]:
    """Ids -> (UTF-8 blob, int64 offsets of length n + 1)."""
    encoded = [i.encode("utf-8") for i in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        offsets[1:] = np.cumsum([len(e) for e in encoded])
    return b"".join(encoded), offsets

"""The corpus n-gram counts, kept as sorted numpy arrays in NGRAM_BUCKETS buckets (bucket = hash % NGRAM_BUCKETS).

A worker's per-bundle counts leave as one element a bucket instead of one a distinct n-gram: on the local runner
a grouped element costs ~250 bytes of bookkeeping besides its payload, a counted n-gram here 16 (hash and count).
A bucket's merged counts are one sorted array: 1/NGRAM_BUCKETS of the distinct n-grams (at ten billion distinct
n-grams, 2.4M entries, 39 MB a bucket: what one worker holds at most).
"""

from __future__ import annotations

import pickle

import apache_beam as beam
import numpy as np

NGRAM_BUCKETS = 4096
COUNTS = np.dtype([("hash", "<u8"), ("count", "<u8")])


def bucket_counts(counts: dict[int, int]):
    """{n-gram hash: count} -> (bucket, packed counts) pairs, one a non-empty bucket."""
    if not counts:
        return
    table = np.fromiter(counts.items(), dtype=COUNTS, count=len(counts))
    buckets = table["hash"] % NGRAM_BUCKETS
    order = np.argsort(buckets, kind="stable")
    table, buckets = table[order], buckets[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(buckets)) + 1))
    for start, end in zip(starts, [*starts[1:], len(table)]):
        yield int(buckets[start]), table[start:end].tobytes()


def unpack(value: bytes) -> np.ndarray:
    return np.frombuffer(value, dtype=COUNTS)


def find_sorted(sorted_hashes: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """(index, found): where each value sits in a non-empty sorted array, and whether it is there (exact)."""
    at = np.minimum(np.searchsorted(sorted_hashes, values), len(sorted_hashes) - 1)
    return at, sorted_hashes[at] == values


def _merged(tables: list[np.ndarray]) -> np.ndarray:
    """One sorted table, one entry a hash, counts summed."""
    table = tables[0] if len(tables) == 1 else np.concatenate(tables)
    hashes, inverse = np.unique(table["hash"], return_inverse=True)
    out = np.empty(len(hashes), dtype=COUNTS)
    out["hash"] = hashes
    out["count"] = np.bincount(inverse, weights=table["count"], minlength=len(hashes)).astype(np.uint64)
    return out


class MergeCounts(beam.CombineFn):
    """A bucket's packed counts -> one sorted table (bytes). Pending tables are merged once they outgrow the
    merged one, so the work stays O(n log n) and the state about the bucket's distinct n-grams."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, element):
        acc.append(unpack(element))
        if len(acc) > 2 and sum(len(t) for t in acc[1:]) > max(len(acc[0]), 65_536):
            acc[:] = [_merged(acc)]
        return acc

    def merge_accumulators(self, accs):
        out = [t for acc in accs for t in acc]
        return [_merged(out)] if len(out) > 1 else out

    def extract_output(self, acc):
        return _merged(acc).tobytes() if acc else np.empty(0, dtype=COUNTS).tobytes()


def histogram(kv):
    """A bucket's counts -> (count, number of n-grams with that count) pairs."""
    values, n = np.unique(unpack(kv[1])["count"], return_counts=True)
    return [(int(c), int(k)) for c, k in zip(values, n)]


def rare(kv, freq):
    """(bucket, the bucket's n-grams below the threshold c*, packed): the counts the rare-token join looks up."""
    bucket, value = kv
    table = unpack(value)
    return bucket, RARE_TABLE + table[table["count"] < freq["allowlist_threshold"]].tobytes()


RARE_TABLE, PAIRS = b"T", b"P"  # the join's values: a bucket's rare counts, or a batch of (n-gram, text) pairs
_PAIR = np.dtype([("gram", "<u8"), ("text", "<u8")])


def bucket_pairs(pairs: dict[tuple[int, int], str]):
    """{(n-gram hash, text hash): n-gram} -> (bucket, one batch of the bucket's pairs) for each bucket."""
    by_bucket: dict[int, list] = {}
    for (gram_hash, text_hash), gram in pairs.items():
        by_bucket.setdefault(gram_hash % NGRAM_BUCKETS, []).append((gram_hash, text_hash, gram))
    for bucket, items in by_bucket.items():
        keys = np.array([(g, t) for g, t, _ in items], dtype=_PAIR)
        yield bucket, PAIRS + pickle.dumps((keys.tobytes(), [gram for _, _, gram in items]), protocol=5)


def rare_texts(kv):
    """A bucket's join group -> (text hash, (count, n-gram)) for each pair whose n-gram is rare. Two streamed
    passes: the first finds the bucket's rare counts (one sorted table), the second looks each batch of pairs
    up in it; the state is that table (1/NGRAM_BUCKETS of the rare n-grams, 16 bytes each)."""
    _, values = kv
    table = next((unpack(memoryview(v)[1:]) for v in values if v[:1] == RARE_TABLE), None)
    if table is None or not len(table):
        return
    for value in values:
        if value[:1] != PAIRS:
            continue
        keys, grams = pickle.loads(memoryview(value)[1:])
        keys = np.frombuffer(keys, dtype=_PAIR)
        at, found = find_sorted(table["hash"], keys["gram"])
        for i in np.flatnonzero(found):
            yield int(keys["text"][i]), (int(table["count"][at[i]]), grams[i])


def allowed(kv, freq):
    """The bucket's allowlisted hashes (count >= c*) as one array; none when c* <= 1 (no rule, no allowlist)."""
    threshold = freq["allowlist_threshold"]
    if threshold <= 1:
        return []
    table = unpack(kv[1])
    return [table["hash"][table["count"] >= threshold].copy()]

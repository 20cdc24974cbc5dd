"""Per-shard scores (`aligndata score`'s ``NNNNN_scores.parquet``: uid, score, model) and the exact top fraction.

``--top-fraction F`` keeps exactly k = floor(F * N) of the N scored samples: the highest scores, ties broken by
the smaller uid. A sample `aligndata score` could not score (no image, no caption, an image that does not decode)
has a null score: no score filter keeps it, it is not among the N ranked, and subset.json counts it ("unscored"). The order is one 160-bit key a sample, ascending = better: the float32 score's bits mapped to an
unsigned integer that sorts like the float, inverted (so higher scores come first), then the uid's 128 bits.
The k-th smallest key is found by a radix select over 16-bit digits (``radix_select``): each pass reads every
shard's scores once and counts the next digit among the samples that share the digits chosen so far. What is
bounded: the select holds one 65,536-bin histogram (512 KiB) and the digits chosen so far; a worker holds one
shard's scores. Nothing grows with the corpus. A pass is over as soon as the chosen bin holds exactly the
samples still needed, so distinct scores take two passes and a tie at the boundary a few more (its uids).
The result is a cutoff key: a sample is kept when its key is <= the cutoff, a test each shard makes alone.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligndata.io.tables import ParquetColumnsError, read_parquet_columns
from aligndata.subsets import SubsetError

SCORES_SUFFIX = "_scores.parquet"
SCORE_COLUMNS = ("uid", "score", "model")
DIGIT_BITS = 16
BINS = 1 << DIGIT_BITS
DIGITS = 10  # 32 score bits + 128 uid bits, 16 bits a digit
LAST = BINS - 1


def read_scores(storage, path: str, uids: pa.ChunkedArray, shard: str) -> tuple[np.ndarray, set[str]]:
    """The scores of one shard's samples in the order of ``uids`` (its parquet's uid column), as float32 with NaN
    for the unscored (a null score), and the model ids found. Every sample must have exactly one row; a score value
    of NaN is an error (a model that gives NaN is broken, and NaN cannot be ranked); the file must hold no uid of
    another shard."""
    if not storage.exists(path):
        raise SubsetError(f"shard {shard}: no scores file {path} (write one with aligndata score, or name the "
                          f"directory that holds them with --scores)")
    try:
        table = read_parquet_columns(storage, path, SCORE_COLUMNS)
    except ParquetColumnsError as err:
        if err.missing:
            raise SubsetError(f"shard {shard}: {path} has no {', '.join(err.missing)} column (a scores file has "
                              f"{', '.join(SCORE_COLUMNS)})") from None
        raise SubsetError(f"shard {shard}: {path} is not a readable parquet file ({err.cause})") from None
    score_uids = table.column("uid")
    if pc.count_distinct(score_uids).as_py() != table.num_rows or score_uids.null_count:
        raise SubsetError(f"shard {shard}: {path} lists a uid twice (or a null uid)")
    position = pc.index_in(uids, value_set=score_uids.combine_chunks())
    if position.null_count:
        example = uids.filter(pc.is_null(position))[0].as_py()
        raise SubsetError(f"shard {shard}: {position.null_count} of {len(uids)} samples have no score in {path} "
                          f"(e.g. uid {example})")
    if table.num_rows != len(uids):
        raise SubsetError(f"shard {shard}: {path} scores {table.num_rows - len(uids)} uids that are not in the "
                          f"shard (scores of another shard set?)")
    try:
        column = pc.cast(table.column("score"), pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SubsetError(f"shard {shard}: the score column of {path} is not numeric ({err})") from None
    nan = int(pc.sum(pc.is_nan(column)).as_py() or 0)  # null rows are not NaN here: they stay null
    if nan:
        raise SubsetError(f"shard {shard}: {nan} samples in {path} have a NaN score (a null score means unscored; "
                          f"NaN cannot be ranked)")
    scores = column.to_numpy(zero_copy_only=False)  # null -> NaN: the unscored, from here on
    models = table.column("model")
    if models.null_count:
        raise SubsetError(f"shard {shard}: {models.null_count} rows of {path} name no model")
    scores = scores[position.to_numpy()]
    return scores, set(pc.unique(models).to_pylist())


def check_one_model(models: set[str]) -> str | None:
    """The one model id of a run's scores; several is an error (scores of different models do not compare)."""
    if len(models) > 1:
        raise SubsetError(f"the scores come from {len(models)} models ({', '.join(sorted(models))}): score every "
                          f"shard with one model")
    return next(iter(models), None)


def top_count(fraction: Fraction, total: int) -> int:
    """k = floor(F * N), computed exactly from the fraction as typed (0.29 of 100 is 29, not 28)."""
    return int(fraction * total)


# ----------------------------------------------------------------------------------------- ranking keys


def rank_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys that sort ascending as the float32 scores sort descending (-0.0 counts as 0.0)."""
    bits = (np.asarray(scores, np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    negative = (bits >> np.uint32(31)).astype(bool)
    ascending = np.where(negative, ~bits, bits | np.uint32(0x80000000))
    return ~ascending


def digits(keys: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The 10 16-bit digits of each sample's 160-bit order key (score key, uid hi, uid lo), most significant
    first: an (n, 10) uint16 array (20 bytes a sample of one shard)."""
    out = np.empty((len(keys), DIGITS), np.uint16)
    parts = [(np.asarray(keys, np.uint64), 2), (np.asarray(hi, np.uint64), 4), (np.asarray(lo, np.uint64), 4)]
    column = 0
    for value, count in parts:
        for i in range(count):
            shift = np.uint64(DIGIT_BITS * (count - 1 - i))
            out[:, column] = (value >> shift) & np.uint64(LAST)
            column += 1
    return out


def histogram(rows: np.ndarray, prefix: tuple[int, ...]) -> np.ndarray:
    """Counts of the next digit (position len(prefix)) among the rows whose first digits equal ``prefix``."""
    level = len(prefix)
    match = np.all(rows[:, :level] == np.asarray(prefix, np.uint16), axis=1) if level else slice(None)
    return np.bincount(rows[match, level], minlength=BINS).astype(np.int64)


def radix_select(k: int, count_next: Callable[[tuple[int, ...]], np.ndarray]) -> tuple[int, ...]:
    """The cutoff digits (all 10) such that exactly the k smallest keys are <= the cutoff. ``count_next(prefix)``
    returns the summed histogram of the digit after ``prefix`` over all samples (one pass over the scores).
    Requires 1 <= k <= the number of samples. Two samples with equal keys (the same uid listed twice) cannot be
    split: then the cutoff keeps both, and the count kept says so."""
    prefix: list[int] = []
    need = k  # samples still to take among those that share ``prefix``
    while len(prefix) < DIGITS:
        counts = count_next(tuple(prefix))
        running = np.cumsum(counts)
        chosen = int(np.searchsorted(running, need))  # the first bin where the running count reaches need
        need -= int(running[chosen - 1]) if chosen else 0
        prefix.append(chosen)
        if counts[chosen] == need:  # every sample of this bin is taken: nothing below it to decide
            break
    return tuple(prefix) + (LAST,) * (DIGITS - len(prefix))


def cutoff_parts(cutoff: tuple[int, ...]) -> tuple[int, int, int]:
    """The cutoff digits as (score key, uid hi, uid lo) integers."""
    def number(ds) -> int:
        value = 0
        for d in ds:
            value = (value << DIGIT_BITS) | d
        return value

    return number(cutoff[:2]), number(cutoff[2:6]), number(cutoff[6:])


def within(keys: np.ndarray, hi: np.ndarray, lo: np.ndarray, cutoff: tuple[int, int, int]) -> np.ndarray:
    """Which samples' (key, hi, lo) are lexicographically <= the cutoff."""
    key_cut, hi_cut, lo_cut = (np.uint64(v) for v in cutoff)
    keys = np.asarray(keys, np.uint64)
    return (keys < key_cut) | ((keys == key_cut) & ((hi < hi_cut) | ((hi == hi_cut) & (lo <= lo_cut))))


def score_at(key_cut: int) -> float:
    """The float32 score that a rank key stands for (the lowest score kept, for subset.json)."""
    ascending = np.uint32(~np.uint32(key_cut))
    bits = ascending & np.uint32(0x7FFFFFFF) if ascending >> np.uint32(31) else ~ascending
    return float(np.array([bits], np.uint32).view(np.float32)[0])

"""One source shard's verdicts: which rows of its parquet every filter keeps, and which all of them keep.

A sample is a row of the shard's ``NAME.parquet`` (the per-shard metadata every curate output has; its uid column
is what scores, uid lists and the dedup listing name). The filters, each a property of the sample alone, are
combined with AND, and counted both alone and in this fixed order (the funnel in subset.json):

    uids (--uids FILE), drop_duplicates, where, min_score, top_fraction

``--top-fraction`` ranks all samples of the whole set (not the ones other filters left), so every filter means the
same whatever else is asked; its cutoff comes from a radix select over every shard first (scores.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aligndata.shards.outcomes import success_rows, with_status
from aligndata.shards.spec import ShardSet
from aligndata.shards.names import DEFAULT_SHARD_DIGITS, digits_of
from aligndata.subsets import SubsetError
from aligndata.subsets import scores as scoring
from aligndata.subsets.uids import UidSet, hex_to_pairs, read_duplicates, read_uid_list
from aligndata.subsets.where import Where, compile_where

FILTERS = ("uids", "drop_duplicates", "where", "min_score", "top_fraction")
TopCutoff = tuple[int, int, int] | str | None  # see choose()


@dataclass(frozen=True)
class Request:
    """What the user asked for (picklable: every worker process gets a copy)."""

    spec: str
    paths: tuple[str, ...]
    output: str
    scores_dir: str | None = None
    min_score: float | None = None
    top_fraction: str | None = None  # as typed: the count is computed exactly from the decimal
    where: str | None = None
    uids: str | None = None
    duplicates: str | None = None
    samples_per_shard: int = 10_000
    shard_digits: int = DEFAULT_SHARD_DIGITS  # of the output's names (the command follows the input's)

    @property
    def needs_scores(self) -> bool:
        return self.min_score is not None or self.top_fraction is not None

    def asked(self) -> dict:
        """The options as subset.json records them."""
        return {"shards": self.spec, "scores": self.scores_dir, "min_score": self.min_score,
                "top_fraction": self.top_fraction, "where": self.where, "uids": self.uids,
                "drop_duplicates": self.duplicates, "samples_per_shard": self.samples_per_shard,
                "shard_digits": self.shard_digits}


@dataclass
class ShardChoice:
    """What one source shard contributes: its kept rows (positions in its parquet) and their uids."""

    path: str
    total: int
    rows: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    passed: dict[str, int] = field(default_factory=dict)  # each asked filter alone
    funnel: dict[str, int] = field(default_factory=dict)  # left after each asked filter, in FILTERS order


class Context:
    """A worker's view of the request: the shard set, the compiled --where and the uid lists, loaded once a
    process (each list costs 16 bytes a listed uid in every worker)."""

    def __init__(self, request: Request):
        self.request = request
        self.shards = ShardSet(request.spec, list(request.paths))
        self.where: Where | None = compile_where(request.where) if request.where else None
        self.uid_list: UidSet | None = read_uid_list(request.uids) if request.uids else None
        self.duplicates: UidSet | None = None
        self.duplicate_rows = 0  # rows of the dedup listing, kept and dropped
        if request.duplicates:
            self.duplicates, self.duplicate_rows = read_duplicates(request.duplicates)

    def scores_file(self, path: str) -> str:
        name = self.shards.stem(path) + scoring.SCORES_SUFFIX
        directory = self.request.scores_dir or self.shards.parent(path)
        return self.shards.join(directory, name)

    # --------------------------------------------------------------------------------------- shard reading

    def table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """The shard's samples: its parquet's status == "success" rows (every row without a status column; failed
        rows, which curate --parquet-failed-rows and img2dataset list too, are not samples). Only ``columns``
        when given; always uid and the key column."""
        shard = self.shards.name(path)
        parquet_path = self.shards.companion(path, ".parquet")
        if not self.shards.exists(parquet_path):
            raise SubsetError(f"shard {shard}: no {self.shards.basename(parquet_path)} beside it (subset reads "
                              f"each shard's metadata from its parquet, as curate writes it)")
        try:
            with self.shards.open(parquet_path) as f:
                parquet = pq.ParquetFile(f)
                names = parquet.schema_arrow.names
                if "uid" not in names:
                    raise SubsetError(f"shard {shard}: {self.shards.basename(parquet_path)} has no uid column")
                wanted = None
                if columns is not None:
                    if self.where is not None:
                        self.where.check_columns(names, shard)
                    wanted = list(dict.fromkeys(["uid", key_column(names), *columns]))
                table = parquet.read(columns=with_status(wanted, names))
        except (pa.ArrowInvalid, OSError) as err:
            raise SubsetError(f"shard {shard}: {parquet_path} is not a readable parquet file ({err})") from None
        try:
            samples = success_rows(table)
        except ValueError as err:  # a status column that is not text
            raise SubsetError(f"shard {shard}: {self.shards.basename(parquet_path)}: {err}") from None
        return samples if wanted is None or "status" in wanted else samples.select(wanted)

    def uids(self, path: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        shard = self.shards.name(path)
        column = table.column("uid")
        pairs = hex_to_pairs(column, f"shard {shard}'s uid column")  # first: it names null and malformed uids
        if pc.count_distinct(column).as_py() != table.num_rows:
            raise SubsetError(f"shard {shard}: its parquet lists a uid twice")
        return pairs

    def check_count(self, path: str, rows: int) -> None:
        """The parquet must describe every sample of the tar: compare with NAME_stats.json's ``successes`` (``count``
        in stats that have no successes) when there is one."""
        shard = self.shards.name(path)
        try:
            stats = self.shards.read_json(self.shards.companion(path, "_stats.json"))
        except ValueError as err:
            raise SubsetError(f"shard {shard}: {err}") from None
        stats = stats if isinstance(stats, dict) else {}
        count = stats.get("successes", stats.get("count"))
        if isinstance(count, int) and count != rows:
            raise SubsetError(f"shard {shard}: its parquet has {rows} sample rows but its _stats.json counts {count} "
                              f"samples (run aligndata inspect validate)")

    def scores(self, path: str, table: pa.Table) -> tuple[np.ndarray, set[str]]:
        return scoring.read_scores(self.shards.storage(self.scores_file(path)), self.scores_file(path),
                                   table.column("uid"), self.shards.name(path))


def input_digits(shards: ShardSet) -> int:
    """The digits of the source shards' names (the fewest among those that are all digits: 100000.tar is still a
    5-digit set), else DEFAULT_SHARD_DIGITS: a subset is named like its input unless --shard-digits says."""
    found = [digits_of(shards.stem(path)) for path in shards.paths]
    return min((d for d in found if d is not None), default=DEFAULT_SHARD_DIGITS)


def key_column(names: list[str]) -> str:
    """The column holding the tar's member key: ``key`` (ours, img2dataset's), else ``uid``."""
    return "key" if "key" in names else "uid"


# ------------------------------------------------------------------------------------------ the passes


def rank_histogram(context: Context, path: str, prefix: tuple[int, ...]) -> tuple[int, int, set[str], np.ndarray]:
    """One radix-select pass over one shard: (scored samples, unscored samples, model ids, histogram of the next
    digit among the scored)."""
    table = context.table(path, [])
    hi, lo = context.uids(path, table)
    scores, models = context.scores(path, table)
    scored = ~np.isnan(scores)
    rows = scoring.digits(scoring.rank_keys(scores[scored]), hi[scored], lo[scored])
    return int(scored.sum()), int((~scored).sum()), models, scoring.histogram(rows, prefix)


def choose(context: Context, path: str, top_cutoff: TopCutoff = None) -> ShardChoice:
    """Every asked filter on one shard, and their AND. ``top_cutoff``: --top-fraction's cutoff (key, uid hi,
    uid lo), or "all" / "none" when the fraction keeps every sample or none."""
    request = context.request
    table = context.table(path, list(context.where.columns) if context.where else [])
    context.check_count(path, table.num_rows)
    hi, lo = context.uids(path, table)
    verdicts: dict[str, np.ndarray] = {}
    if context.uid_list is not None:
        verdicts["uids"] = context.uid_list.contains(hi, lo)
    if context.duplicates is not None:
        verdicts["drop_duplicates"] = ~context.duplicates.contains(hi, lo)
    if context.where is not None:
        verdicts["where"] = context.where.mask(table, context.shards.name(path))
    if request.needs_scores:
        scores, _ = context.scores(path, table)
        scored = ~np.isnan(scores)  # an unscored sample passes no score filter
        if request.min_score is not None:
            verdicts["min_score"] = scored & (np.where(scored, scores, 0).astype(np.float64) >= request.min_score)
        if request.top_fraction is not None:
            verdicts["top_fraction"] = scored & _top(top_cutoff, scores, hi, lo)
    keep = np.ones(table.num_rows, bool)
    choice = ShardChoice(path, table.num_rows, np.zeros(0, np.int64), hi, lo)
    for name in FILTERS:
        if name in verdicts:
            keep &= verdicts[name]
            choice.passed[name] = int(verdicts[name].sum())
            choice.funnel[name] = int(keep.sum())
    choice.rows = np.nonzero(keep)[0].astype(np.int64)
    choice.hi, choice.lo = hi[keep], lo[keep]
    return choice


def _top(cutoff: TopCutoff, scores: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    if cutoff == "all":
        return np.ones(len(scores), bool)
    if cutoff == "none":
        return np.zeros(len(scores), bool)
    return scoring.within(scoring.rank_keys(scores), hi, lo, cutoff)

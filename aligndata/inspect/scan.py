"""Walk a whole shard set: samples from the tars, or the per-shard parquet files when every shard has one.

A parquet's samples are its ``status == "success"`` rows (``shards.outcomes``): curate --parquet-failed-rows, like
img2dataset, also lists the shard's failed rows there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.shards.contract import TEXT_EXTS
from aligndata.shards.outcomes import success_rows
from aligndata.shards.reader import Problem, Sample, _ignore, iter_samples
from aligndata.shards.spec import ShardSet


def metadata_only(ext: str) -> bool:
    """``want`` for iter_samples: load .txt/.json/.cls, skip image bytes."""
    return ext in TEXT_EXTS


def scan(shards: ShardSet, want: Callable[[str], bool] | None = None, on_problem: Problem = _ignore,
         check_end: bool = False, paths: list[str] | None = None) -> Iterator[Sample]:
    """Samples of every shard (or of ``paths``), in shard order then file order."""
    for path in paths if paths is not None else shards.paths:
        shard = shards.name(path)
        try:
            handle = shards.open(path)
        except OSError as err:
            on_problem(shard, None, f"cannot open {path}: {err}")
            continue
        with handle:
            yield from iter_samples(handle, shard, want, on_problem, check_end)


def read_parquet(shards: ShardSet, path: str, samples_only: bool = True) -> pa.Table | None:
    """A shard's parquet (its sample rows; every row when not ``samples_only``), or None when absent; an
    unreadable file raises ValueError naming it."""
    parquet = shards.companion(path, ".parquet")
    if not shards.exists(parquet):
        return None
    try:
        with shards.open(parquet) as f:
            table = pq.read_table(pa.BufferReader(f.read()))
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{parquet}: unreadable parquet ({err})") from err
    try:
        return success_rows(table) if samples_only else table
    except ValueError as err:
        raise ValueError(f"{parquet}: {err}") from err


def metadata_table(shards: ShardSet, columns: list[str] | None = None) -> pa.Table | None:
    """Every shard's parquet concatenated, with a leading ``shard`` column; None when any shard lacks one (the
    caller then scans the tars). Columns a shard lacks are null there."""
    tables = []
    for path in shards.paths:
        try:
            table = read_parquet(shards, path)
        except ValueError:
            return None
        if table is None:
            return None
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        table = table.add_column(0, "shard", pa.array([shards.name(path)] * table.num_rows, pa.string()))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive")

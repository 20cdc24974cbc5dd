"""Write one output shard of a subset: the kept samples of one or more source shards, their member bytes copied
unchanged, in input order.

Input order is the order of SHARDS, then each shard's parquet row order (curate writes tar and parquet in the same
order, so the tar is read once, straight through). A sample is found in its tar by its parquet key and copied
member by member with our writer's deterministic headers (``shards.writer.TarMembers``): same payloads, same
member order, names ``KEY.EXT`` (image extensions lower-cased, as every reader sees them). The new parquet holds
the kept rows of the source parquet (same columns and types), then the stats file is written last, as curate does.
The bytes depend only on the plan, never on which process writes the shard or when.

A tar read stops once its last wanted sample is found. A sample that comes before its turn (a tar whose order
differs from its parquet's) waits in memory until its turn; in curate's shards that never happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aligndata.io.atomic import atomic_writer
from aligndata.shards.reader import ShardProblem, iter_shard
from aligndata.shards.writer import TarMembers, finish_shard, parquet_bytes, shard_name
from aligndata.subsets import SubsetError
from aligndata.subsets.select import Context, key_column


@dataclass(frozen=True)
class OutputJob:
    """Output shard ``index`` takes, from each source shard in turn, the parquet rows listed."""

    index: int
    segments: tuple[tuple[str, np.ndarray], ...]


def write_output(context: Context, job: OutputJob) -> dict:
    """Write the job's NAME.tar, NAME.parquet and NAME_stats.json; return the stats."""
    output = context.request.output
    storage = context.shards.storage(output)
    name = shard_name(job.index, context.request.shard_digits)
    parts = []
    for path, rows in job.segments:
        table = context.table(path)
        parts.append((path, table.take(pa.array(rows, pa.int64()))))
    try:
        table = pa.concat_tables([part for _, part in parts], promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        sources = ", ".join(context.shards.name(path) for path, _ in parts)
        raise SubsetError(f"output shard {name}: the parquet files of shards {sources} have columns of "
                          f"different types ({err})") from None
    with atomic_writer(storage.join(output, f"{name}.tar")) as handle:
        with TarMembers(handle) as tar:
            for path, part in parts:
                keys = part.column(key_column(part.column_names)).to_pylist()
                for key, files in _kept_samples(context, path, keys):
                    for ext, payload in files:
                        tar.add(f"{key}.{ext}", payload)
    return finish_shard(output, name, parquet_bytes(table), table, tar.size)


def _kept_samples(context: Context, path: str, keys: list[str]) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """(key, [(extension, payload), ...]) of each key in ``keys``, in that order, read from the shard's tar."""
    shard = context.shards.name(path)
    wanted = set(keys)
    if len(wanted) != len(keys):
        raise SubsetError(f"shard {shard}: its parquet lists a key twice")

    def on_error(url: str, error: Exception) -> None:
        if isinstance(error, SubsetError):
            raise error
        if isinstance(error, ShardProblem):
            if error.fatal or error.key in wanted:
                raise SubsetError(f"shard {shard}: {error} (run aligndata inspect validate)")
            return  # a problem with a sample the subset does not copy
        raise SubsetError(f"shard {shard}: cannot read {url}: {error}")

    waiting: dict[str, list[tuple[str, bytes]]] = {}
    seen: set[str] = set()
    turn = 0
    samples = iter_shard(path, on_error=on_error)
    try:
        for sample in samples:
            if sample.key not in wanted:
                continue
            if sample.key in seen:
                raise SubsetError(f"shard {shard}: sample {sample.key} appears twice in the tar")
            seen.add(sample.key)
            waiting[sample.key] = list(sample.files.items())
            while turn < len(keys) and keys[turn] in waiting:
                yield keys[turn], waiting.pop(keys[turn])
                turn += 1
            if turn == len(keys):
                break  # the rest of the tar holds nothing this job copies
    finally:
        samples.close()
    if turn < len(keys):
        raise SubsetError(f"shard {shard}: sample {keys[turn]} is in its parquet but not in its tar (run aligndata "
                          f"inspect validate)")

"""The duplicate groups ``aligndata dedup`` writes and ``aligndata subset --drop-duplicates`` reads.

A parquet dataset in a directory (``SHARDS_DIR/duplicates`` by default): ``part-00000-of-00003.parquet``, ...
plus ``summary.json``. One row per sample that is in a group of two or more (samples in no group are not listed):

    uid    string   the sample's uid (its key in the shards)
    group  int64    the group: the position of its first member in SHARDS, shard index * 2**32 + row
    keep   bool     exactly one true per group: the sample a deduplicated corpus keeps
    kind   string   "exact" (every member has the same bytes, one sha256) or "near" (pHashes within T)

Parts are split by a hash of the uid, one part per 1,000,000 samples read (so at most about that many rows a
part), and sorted by (uid, group) within a part; the same shards and options give the same bytes on every runner. Every part is written under a temporary
name and renamed. A uid is listed once per group it falls in, so only a SHARDS list that holds one sample twice
(several outputs with the same url and caption whose images differ) can list a uid twice.
"""

from __future__ import annotations

import pyarrow as pa

from aligndata.io.storage import storage_for
from aligndata.shards.contract import LEDGER_PART_RE, ledger_part_name

DUPLICATES = "duplicates"  # the default directory, inside the shards' directory
SUMMARY = "summary.json"
EXACT, NEAR = "exact", "near"
KINDS = (EXACT, NEAR)
SCHEMA = pa.schema([("uid", pa.string()), ("group", pa.int64()), ("keep", pa.bool_()), ("kind", pa.string())])
PART_ROWS = 1_000_000

part_name = ledger_part_name  # part-00000-of-00003.parquet, as the row ledgers


def part_paths(directory: str) -> list[str]:
    """The parts in a duplicates directory, in order ([] when there are none)."""
    storage = storage_for(directory)
    return sorted(p for p in storage.glob(storage.join(directory, "part-*.parquet"))
                  if LEDGER_PART_RE.match(storage.basename(p)))


def read_duplicates(directory: str) -> pa.Table:
    """Every part as one table (small outputs and tests; large ones: pyarrow.dataset.dataset(directory))."""
    import pyarrow.parquet as pq

    paths = part_paths(directory)
    if not paths:
        raise FileNotFoundError(f"{directory}: no duplicates parts (part-*.parquet); run aligndata dedup first")
    storage = storage_for(directory)
    tables = []
    for path in paths:
        with storage.open_read(path) as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables).cast(SCHEMA)


def check_groups(table: pa.Table) -> list[str]:
    """Problems with a duplicates table: groups of one, groups without exactly one keep, mixed kinds."""
    members: dict[int, int] = {}
    keeps: dict[int, int] = {}
    kinds: dict[int, set] = {}
    for group, keep, kind in zip(*(table.column(c).to_pylist() for c in ("group", "keep", "kind"))):
        members[group] = members.get(group, 0) + 1
        keeps[group] = keeps.get(group, 0) + bool(keep)
        kinds.setdefault(group, set()).add(kind)
    problems = [f"group {g}: {n} member(s)" for g, n in members.items() if n < 2]
    problems += [f"group {g}: {k} samples marked keep" for g, k in keeps.items() if k != 1]
    problems += [f"group {g}: kinds {sorted(k)}" for g, k in kinds.items() if len(k) != 1 or not k <= set(KINDS)]
    return problems

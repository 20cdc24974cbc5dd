"""`aligndata subset`: choose samples of a shard set (scores, metadata, uid lists, duplicates) and write them as new
shards with their member bytes unchanged, plus the kept uids in DataComp's subset format.

uids.py (uid lists: DataComp's .npy, text, parquet, the dedup listing), where.py (the safe --where expression),
scores.py (per-shard scores and the exact top fraction), select.py (one shard's verdicts), repack.py (one output
shard), run.py (the whole command: plan, pools, sizes.json, uids.npy, subset.json).
Beam-free and torch-free: shards and pyarrow only.
"""

from __future__ import annotations

from aligndata.io.inputs import InputError


class SubsetError(InputError):
    """A problem the user can fix (an option, a missing or inconsistent input file): one line, exit 2."""

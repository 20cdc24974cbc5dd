"""The output contract's typed sample metadata, shared by the shard writer and the shard tools.

Beam-free on purpose: `aligndata inspect` reads shards without importing Apache Beam.
"""

from __future__ import annotations

import pyarrow as pa

# The .json fields every sample carries, with their parquet types. Typed so every shard of a run has the same
# schema even when a column is all-null in one shard.
META_COLUMNS: dict[str, pa.DataType] = {
    "key": pa.string(),
    "uid": pa.string(),
    "url": pa.string(),
    "caption": pa.string(),
    "page_url": pa.string(),
    "width": pa.int64(),
    "height": pa.int64(),
    "original_width": pa.int64(),
    "original_height": pa.int64(),
    "sha256": pa.string(),
    "phash": pa.string(),
}

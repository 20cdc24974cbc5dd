"""`inspect show`, `head` and `grep`: look at individual samples.

Captions and metadata come from untrusted shards, so control characters (terminal escape sequences included)
are shown escaped, never sent raw to the terminal.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Iterator

import pyarrow.parquet as pq
from PIL import Image

from aligndata.shards.outcomes import success_rows
from aligndata.shards.reader import Sample
from aligndata.inspect.scan import metadata_only, metadata_table, scan
from aligndata.shards.spec import ShardSet


class NotFound(Exception):
    """The requested sample is not in the shard set."""


def printable(text: str) -> str:
    """``text`` with control characters escaped (\\x1b, \\n, ...), safe to print on a terminal."""
    if text is None:
        return "-"
    return "".join(
        ch if unicodedata.category(ch) not in ("Cc", "Cf") or ch == "\u200d" else ch.encode("unicode_escape").decode()
        for ch in text
    )


# ------------------------------------------------------------------------------------------------ finding


def _parquet_rows(shards: ShardSet, path: str) -> int | None:
    """The samples the shard's parquet lists (its status == "success" rows), None when unknown."""
    parquet = shards.companion(path, ".parquet")
    if not shards.exists(parquet):
        return None
    try:
        with shards.open(parquet) as f:
            file = pq.ParquetFile(io.BytesIO(f.read()))
            if "status" not in file.schema_arrow.names:
                return file.metadata.num_rows
            return success_rows(file.read(columns=["status"])).num_rows
    except Exception:  # a broken parquet only costs us the fast path
        return None


def find_by_key(shards: ShardSet, key: str) -> Sample:
    """The sample with ``key``: the per-shard parquet files say which tar to read when they exist."""
    table = metadata_table(shards, ["key"])
    candidates = shards.paths
    if table is not None:
        shard_names = [s for s, k in zip(table.column("shard").to_pylist(),
                                         table.column("key").to_pylist() if "key" in table.column_names else [])
                       if k == key]
        hinted = [p for p in shards.paths if shards.name(p) in shard_names]
        candidates = hinted + [p for p in shards.paths if p not in hinted]  # parquet may be stale: still look
    for sample in scan(shards, paths=candidates):
        if sample.key == key:
            return sample
    raise NotFound(f"no sample with key {key!r} in {len(shards)} shard(s) of {shards.spec}")


def find_by_index(shards: ShardSet, index: int) -> Sample:
    """The ``index``-th sample (0-based) over all shards in order; parquet row counts skip whole shards."""
    remaining = index
    for path in shards.paths:
        rows = _parquet_rows(shards, path)
        if rows is not None and remaining >= rows:
            remaining -= rows
            continue
        for sample in scan(shards, paths=[path]):
            if remaining == 0:
                return sample
            remaining -= 1
    raise NotFound(f"index {index} is past the end: {shards.spec} holds {index - remaining} samples")


# ------------------------------------------------------------------------------------------------ showing


def describe_image(data: bytes | None) -> str:
    if data is None:
        return "missing"
    try:
        with Image.open(io.BytesIO(data)) as img:
            return f"{img.format}, {img.width}x{img.height}, {img.mode}, {len(data)} bytes"
    except Exception as err:
        return f"undecodable ({type(err).__name__}), {len(data)} bytes"


def format_sample(sample: Sample) -> str:
    lines = [
        f"shard    {printable(sample.shard)}",
        f"key      {printable(sample.key)}",
        f"position {sample.index} in its shard",
        f"members  {', '.join(printable(ext) for ext in sample.files)}",
        f"image    {printable(sample.image_ext or '-')}: {describe_image(sample.image)}",
        f"caption  {printable(sample.text)}",
    ]
    if "cls" in sample.files and sample.files["cls"] is not None:
        lines.append(f"cls      {printable(sample.files['cls'].decode('utf-8', 'replace'))}")
    raw = sample.files.get("json")
    if raw is not None:
        meta = sample.meta
        body = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) if meta is not None else \
            raw.decode("utf-8", "replace") + "\n(not a JSON object)"
        lines.append("json")
        lines.extend("  " + printable(line) for line in body.splitlines())
    return "\n".join(lines)


def head(shards: ShardSet, n: int) -> Iterator[Sample]:
    if n <= 0:
        return
    for i, sample in enumerate(scan(shards, want=metadata_only)):
        yield sample
        if i + 1 >= n:
            return


def head_line(sample: Sample) -> str:
    meta = sample.meta or {}
    size = f"{meta.get('width')}x{meta.get('height')}" if "width" in meta else "-"
    return f"{printable(sample.shard)}\t{printable(sample.key)}\t{size}\t{printable(sample.caption)}"


def grep(shards: ShardSet, pattern: re.Pattern, force_scan: bool = False) -> Iterator[tuple[str, str, str]]:
    """(shard, key, caption) of every sample whose caption matches; parquet captions when every shard has them."""
    table = None if force_scan else metadata_table(shards, ["key", "caption"])
    if table is not None and {"key", "caption"} <= set(table.column_names):
        for shard, key, caption in zip(*(table.column(c).to_pylist() for c in ("shard", "key", "caption"))):
            if isinstance(caption, str) and pattern.search(caption):
                yield shard, key, caption
        return
    for sample in scan(shards, want=metadata_only):
        caption = sample.caption
        if caption is not None and pattern.search(caption):
            yield sample.shard, sample.key, caption

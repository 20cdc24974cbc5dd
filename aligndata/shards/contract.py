"""The output contract's member extensions and typed sample metadata, shared by the shard writer and every reader
(``aligndata inspect``, the report page, the trainer).

Beam-free on purpose: `aligndata inspect` reads shards without importing Apache Beam.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

from aligndata.filters.language import LANGUAGE_FIELD, SCORE_FIELD


def make_uid(url: str, caption: str) -> str:
    """The sample key: 32 hex chars of sha256(url + TAB + caption); stable across runs, dot-free (curate's rows;
    shards-from-labels passes a file's name as the url and its class name as the caption)."""
    return hashlib.sha256(f"{url}\t{caption}".encode("utf-8", errors="surrogatepass")).hexdigest()[:32]

# Extensions of a sample's image member, in the order readers pick one when a sample has several (lower case;
# readers lower-case the members' extensions). Our writer writes jpg, webp or png (images/process.py); the others
# are what other WebDataset tools write and Pillow decodes.
IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# The other members of a sample: the caption, the metadata (META_COLUMNS and extra columns), the optional class.
TEXT_EXTS: tuple[str, ...] = ("txt", "json", "cls")

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

# Fields that language detection (--languages or --detect-language) adds to every kept sample's .json, typed
# in the parquet the same way in every shard; absent when detection is off (the shards are then as before).
LANGUAGE_COLUMNS: dict[str, pa.DataType] = {
    LANGUAGE_FIELD: pa.string(),
    SCORE_FIELD: pa.float64(),
}

# Class names of an image-label shard set (`aligndata shards-from-labels` writes it beside the shards; the trainer
# reads it): line i is the name of class i (the .cls value), one name per line.
CLASSNAMES = "classnames.txt"

# The row ledgers: DIR/rejected/ (every rejected input row with its reason) and, for --dry-run, DIR/candidates/
# (the rows a real run would fetch). Each is written in parts by many workers, never gathered in one:
# part-00000-of-00042.parquet, ..., rows sorted by input position within a part, at most LEDGER_PART_ROWS rows
# a part. Outputs of versions before the parts were one file, DIR/rejected.parquet; readers still take it.
REJECTED = "rejected"
CANDIDATES = "candidates"
LEDGER_PART_ROWS = 1_000_000
LEDGER_PART_RE = re.compile(r"^part-(\d{5,})-of-(\d{5,})\.parquet$")


def ledger_part_name(index: int, total: int) -> str:
    return f"part-{index:05d}-of-{total:05d}.parquet"

"""`inspect export`: every sample of a shard set as one parquet or JSON-lines file, read from the tars.

parquet has a fixed schema, so it can be streamed in batches whatever the shards hold: ``shard``, ``key``,
``caption`` (the .txt), the contract's typed .json fields, the language fields (``language``,
``language_score``: null where the shards were curated without language detection), ``json`` (the whole .json
text, so extra columns are never lost), ``image_ext`` and, with ``--with-images``, ``image`` (the encoded bytes).
JSON lines carry every .json field at top level, plus ``shard``, ``key``, ``caption``, ``image_ext`` and
``image_base64``.

Only the named output file is written; a failed export removes its partial file.
"""

from __future__ import annotations

import base64
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.shards.contract import LANGUAGE_COLUMNS, META_COLUMNS
from aligndata.shards.reader import Sample
from aligndata.inspect.scan import metadata_only, scan
from aligndata.shards.spec import ShardSet
from aligndata.io.storage import storage_for

FORMATS = ("parquet", "jsonl")
BATCH_ROWS = 512
# The .json fields that get a typed column of their own (key and caption lead every row)
TYPED_FIELDS: dict[str, pa.DataType] = {
    name: kind for name, kind in {**META_COLUMNS, **LANGUAGE_COLUMNS}.items() if name not in ("key", "caption")}


class ExportError(Exception):
    """A sample cannot be written in the requested format (message names shard and key)."""


def parquet_schema(with_images: bool) -> pa.Schema:
    fields = [pa.field("shard", pa.string()), pa.field("key", pa.string()), pa.field("caption", pa.string())]
    fields += [pa.field(name, kind) for name, kind in TYPED_FIELDS.items()]
    fields += [pa.field("json", pa.string()), pa.field("image_ext", pa.string())]
    if with_images:
        fields.append(pa.field("image", pa.binary()))
    return pa.schema(fields)


def _parquet_row(sample: Sample, with_images: bool) -> dict:
    meta = sample.meta or {}
    row = {"shard": sample.shard, "key": sample.key, "caption": sample.caption}
    for name, kind in TYPED_FIELDS.items():
        value = meta.get(name)
        if value is not None and pa.types.is_integer(kind) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ExportError(f"shard {sample.shard} key {sample.key}: .json {name} is {value!r}, not an integer")
        if value is not None and pa.types.is_floating(kind):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ExportError(f"shard {sample.shard} key {sample.key}: .json {name} is {value!r}, not a number")
            value = float(value)
        if value is not None and pa.types.is_string(kind) and not isinstance(value, str):
            value = json.dumps(value)
        row[name] = value
    raw = sample.files.get("json")
    row["json"] = raw.decode("utf-8", "replace") if raw is not None else None
    row["image_ext"] = sample.image_ext
    if with_images:
        row["image"] = sample.image
    return row


def _jsonl_row(sample: Sample, with_images: bool) -> dict:
    row = dict(sample.meta or {})
    row.update(shard=sample.shard, key=sample.key, caption=sample.caption, image_ext=sample.image_ext)
    if with_images:
        image = sample.image
        row["image_base64"] = base64.b64encode(image).decode("ascii") if image is not None else None
    return row


def check_output(shards: ShardSet, out: str) -> None:
    """Refuse an output path that is a directory or one of the files being read."""
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory; give a file name")
    inputs = set()
    for path in shards.paths:
        inputs.update({path, shards.companion(path, ".parquet"), shards.companion(path, "_stats.json"),
                       shards.sizes_json(path)})
    if os.path.abspath(out) in {os.path.abspath(p) for p in inputs}:
        raise ValueError(f"--out {out} is one of the shard set's own files; choose another name")


def export(shards: ShardSet, fmt: str, out: str, with_images: bool = False) -> int:
    """Write every sample to ``out``; return the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    storage = storage_for(out)
    samples = scan(shards, want=None if with_images else metadata_only)
    try:
        with storage.open_write(out) as handle:
            return _write_parquet(samples, handle, with_images) if fmt == "parquet" else \
                _write_jsonl(samples, handle, with_images)
    except BaseException:
        storage.delete(out)  # never leave a half-written export that looks complete
        raise


def _write_parquet(samples, handle, with_images: bool) -> int:
    schema = parquet_schema(with_images)
    written = 0
    with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        batch: list[dict] = []
        for sample in samples:
            batch.append(_parquet_row(sample, with_images))
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
                batch = []
        if batch or not written:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
    return written


def _write_jsonl(samples, handle, with_images: bool) -> int:
    written = 0
    for sample in samples:
        line = json.dumps(_jsonl_row(sample, with_images), ensure_ascii=False, sort_keys=True) + "\n"
        handle.write(line.encode("utf-8"))
        written += 1
    return written

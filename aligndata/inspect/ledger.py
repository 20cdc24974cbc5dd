"""Reading the row ledgers (DIR/rejected/, DIR/candidates/): every part in order, a batch at a time.

A ledger can hold hundreds of millions of rows, so nothing here needs it in memory: `iter_batches` streams the
parts; `read_ledger` (whole table) is for small outputs and tests; `write_one_file` makes the one-file
convenience copy (`aligndata inspect rejected DIR --output FILE`). pyarrow users can also open the directory
directly: ``pyarrow.dataset.dataset("DIR/rejected")``.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.io.storage import storage_for, strip_file_scheme
from aligndata.shards.contract import LEDGER_PART_RE


def ledger_parts(output_dir: str, name: str) -> list[str]:
    """The parts of ledger ``name`` (``rejected`` or ``candidates``) in order; an older output's single
    ``NAME.parquet`` when there are no parts; [] when the ledger is absent."""
    output_dir = strip_file_scheme(os.fspath(output_dir))
    storage = storage_for(output_dir)
    directory = storage.join(output_dir, name)
    parts = sorted(p for p in storage.glob(storage.join(directory, "part-*.parquet"))
                   if LEDGER_PART_RE.match(storage.basename(p)))
    if parts:
        return parts
    legacy = storage.join(output_dir, f"{name}.parquet")
    return [legacy] if storage.exists(legacy) else []


@contextlib.contextmanager
def parquet_file(path: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile read straight from the (seekable) handle, so only the requested columns are fetched; the
    handle is closed on leaving."""
    with storage_for(path).open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
        except (OSError, ValueError, AttributeError):  # a non-seekable stream: read it whole
            parquet = pq.ParquetFile(io.BytesIO(f.read()))
        yield parquet


def iter_batches(output_dir: str, name: str, columns: list[str] | None = None,
                 batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Record batches of every part, in part order (so in input order for one input file)."""
    for path in ledger_parts(output_dir, name):
        with parquet_file(path) as parquet:
            wanted = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
            yield from parquet.iter_batches(columns=wanted, batch_size=batch_size)


def read_ledger(output_dir: str, name: str, columns: list[str] | None = None) -> pa.Table:
    """The whole ledger as one table (small outputs, tests); raises FileNotFoundError when it is absent."""
    parts = ledger_parts(output_dir, name)
    if not parts:
        raise FileNotFoundError(f"no {name} ledger in {output_dir} (expected {name}/part-*.parquet)")
    tables = []
    for path in parts:
        with parquet_file(path) as parquet:
            tables.append(parquet.read(columns=columns))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def write_one_file(output_dir: str, name: str, target: str) -> int:
    """Concatenate the parts into one parquet file, streaming; returns the number of rows."""
    parts = ledger_parts(output_dir, name)
    if not parts:
        raise FileNotFoundError(f"no {name} ledger in {output_dir}")
    with parquet_file(parts[0]) as first:
        schema = first.schema_arrow
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for batch in iter_batches(output_dir, name, batch_size=65536):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows

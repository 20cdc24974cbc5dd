"""rejected.parquet (one row per rejected input row, with its reason) and candidates.parquet (--dry-run).

Each is one file, written once by one worker, sorted by input position so two runs give identical bytes.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from aligndata.io.atomic import write_bytes_atomic
from aligndata.shards.writer import parquet_bytes

REJECTED_FILE = "rejected.parquet"
CANDIDATES_FILE = "candidates.parquet"
_SENTINEL = "__aligndata_sentinel__"  # guarantees the single writer runs (and writes a file) for empty input

REJECTED_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
    ]
)


class _WriteOnce(beam.PTransform):
    """Gather a PCollection of row dicts into one sorted parquet file; outputs the number of rows written."""

    def __init__(self, path: str, to_table, label: str):
        super().__init__(label)
        self.path = path
        self.to_table = to_table

    def expand(self, rows):
        sentinel = rows.pipeline | "Sentinel" >> beam.Create([_SENTINEL])
        return (
            (rows, sentinel)
            | "WithSentinel" >> beam.Flatten()
            | "OneKey" >> beam.Map(lambda r: (None, r))
            | "Gather" >> beam.GroupByKey()
            | "Write" >> beam.Map(self._write)
        )

    def _write(self, kv):
        rows = sorted((r for r in kv[1] if isinstance(r, dict)),
                      key=lambda r: (r["src"], r["row"], r["uid"]))
        write_bytes_atomic(self.path, parquet_bytes(self.to_table(rows)))
        return len(rows)


def _source_names(specs):
    return {s.index: s.path for s in specs}


def WriteRejected(cfg, specs):
    sources = _source_names(specs)

    def to_table(rows):
        columns = {name: [] for name in REJECTED_SCHEMA.names}
        for r in rows:
            for name in ("uid", "url", "caption", "reason", "detail"):
                columns[name].append(r[name])
            columns["source_file"].append(sources[r["src"]])
            columns["source_row"].append(r["row"])
        return pa.table(columns, schema=REJECTED_SCHEMA)

    return _WriteOnce(FileSystems.join(cfg.output, REJECTED_FILE), to_table, "WriteRejectedOnce")


def WriteCandidates(cfg, specs):
    """Rows that passed every text and frequency rule: what a real run would fetch."""
    sources = _source_names(specs)
    extra_names = [c for c in cfg.extra_cols if c != cfg.page_url_col]

    def to_table(rows):
        columns = {
            "uid": [r["uid"] for r in rows],
            "url": [r["url"] for r in rows],
            "caption": [r["caption"] for r in rows],
            "page_url": pa.array([r.get("page_url") for r in rows], pa.string()),
            "source_file": [sources[r["src"]] for r in rows],
            "source_row": pa.array([r["row"] for r in rows], pa.int64()),
        }
        for name in extra_names:
            columns[name] = [r["extra"].get(name) for r in rows]
        base = {k: pa.array(v, pa.string()) if k in ("uid", "url", "caption", "source_file") else v
                for k, v in columns.items()}
        return pa.table(base)

    return _WriteOnce(FileSystems.join(cfg.output, CANDIDATES_FILE), to_table, "WriteCandidatesOnce")

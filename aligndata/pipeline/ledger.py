"""The row ledgers, written in parts by many workers: DIR/rejected/ (one row per rejected input row, with its
reason) and DIR/candidates/ (--dry-run: the rows a real run would fetch).

No step gathers rows under one key. A row's part is fixed by its input position, ``(file, position // span)``,
so a part holds at most LEDGER_PART_ROWS rows however large the corpus: one worker sorts one part by input
position and writes it (bounded memory). The list of non-empty parts, one small key per part, is combined into
a side input that numbers them, so names (``part-00003-of-00042.parquet``) and bytes are the same on every
runner and every retry; each part is written under a temporary name and renamed. An empty ledger is one empty
part, so readers always find the schema.
"""

from __future__ import annotations

import bisect

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from aligndata.extract.html import MAX_IMAGES_PER_PAGE
from aligndata.extract.pages import ROW_STRIDE
from aligndata.io.atomic import write_bytes_atomic
from aligndata.shards.contract import CANDIDATES, LEDGER_PART_ROWS, REJECTED, ledger_part_name
from aligndata.shards.writer import parquet_bytes

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
# page-URL lists number rows page * ROW_STRIDE + i with at most MAX_IMAGES_PER_PAGE pairs a page: a part spans
# this many pages so it too holds at most LEDGER_PART_ROWS rows.
_PAGES_PER_PART = LEDGER_PART_ROWS // MAX_IMAGES_PER_PAGE


def part_spans(specs) -> dict[int, int]:
    """{input file index: how many row numbers one part spans}."""
    return {s.index: ROW_STRIDE * _PAGES_PER_PART if s.fmt == "page-urls" else LEDGER_PART_ROWS for s in specs}


class _WriteParts(beam.PTransform):
    """Rows -> DIR/NAME/part-I-of-N.parquet; outputs the number of rows written."""

    def __init__(self, directory: str, to_table, spans: dict[int, int], label: str):
        super().__init__(label)
        self.directory = directory
        self.to_table = to_table
        self.spans = spans

    def expand(self, rows):
        parts = (
            rows
            | "PartKey" >> beam.Map(lambda r, spans: ((r["src"], r["row"] // spans[r["src"]]), r), spans=self.spans)
            | "GroupPart" >> beam.GroupByKey()  # one key per part: at most LEDGER_PART_ROWS rows each
        )
        names = beam.pvalue.AsSingleton(
            parts | "PartKeys" >> beam.Keys() | "AllParts" >> beam.combiners.ToList()  # one key a part: small
            | "Sorted" >> beam.Map(sorted)
        )
        written = parts | "WritePart" >> beam.Map(self._write, keys=names)
        empty = rows.pipeline | "Once" >> beam.Create([None]) | "IfEmpty" >> beam.Map(self._write_empty, keys=names)
        return (written, empty) | "AllWritten" >> beam.Flatten() | "Rows" >> beam.CombineGlobally(sum)

    def _path(self, index: int, total: int) -> str:
        return FileSystems.join(self.directory, ledger_part_name(index, total))

    def _write(self, kv, keys):
        key, rows = kv
        rows = sorted(rows, key=lambda r: (r["src"], r["row"], r["uid"]))  # bounded: one part
        write_bytes_atomic(self._path(bisect.bisect_left(keys, key), len(keys)), parquet_bytes(self.to_table(rows)))
        return len(rows)

    def _write_empty(self, _, keys):
        if not keys:
            write_bytes_atomic(self._path(0, 1), parquet_bytes(self.to_table([])))
        return 0


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

    return _WriteParts(FileSystems.join(cfg.output, REJECTED), to_table, part_spans(specs), "WriteRejectedParts")


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

    return _WriteParts(FileSystems.join(cfg.output, CANDIDATES), to_table, part_spans(specs), "WriteCandidatesParts")

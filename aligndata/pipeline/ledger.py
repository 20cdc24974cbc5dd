"""The row ledgers, written in parts by many workers: DIR/rejected/ (one row per rejected input row, with its
reason) and DIR/candidates/ (--dry-run: the rows a real run would fetch).

No step gathers rows under one key. A row's part is fixed by its input position, ``(file, position // span)``,
so a part holds at most LEDGER_PART_ROWS rows however large the corpus. Both ledgers have one part per *input*
part (a range of input positions holding at least one row), numbered in position order from the sorted list of
those keys (a side input: one small key a part), so names (``part-00003-of-00042.parquet``) and bytes are the
same on every runner and every retry; a part no rejected (or kept) row fell in is written empty, with its
schema, and so is part 0 of 1 when the input had no rows at all. Every part is written under a temporary name
and renamed.

The ledger part is also where a row's record (its text and extra columns, packed, see ``packed.py``) meets its
verdict: ``ApplyVerdicts`` holds one part (bounded by LEDGER_PART_ROWS) and, in a dry run, writes both ledgers'
parts itself, so a row's text crosses one shuffle.
"""

from __future__ import annotations

import bisect
import heapq
import shutil
import tempfile

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from aligndata.extract.html import MAX_IMAGES_PER_PAGE
from aligndata.extract.pages import ROW_STRIDE
from aligndata.filters.language import FIELDS as LANGUAGE_FIELDS
from aligndata.filters.language import detection_on
from aligndata.io.atomic import atomic_writer, write_bytes_atomic
from aligndata.pipeline import packed
from aligndata.pipeline.outputs import REJECTS, emit, reject
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
REASONS, WRITTEN = "reasons", "written"  # ApplyVerdicts' counters: {reason: rows}, {ledger: rows written}


def part_spans(specs) -> dict[int, int]:
    """{input file index: how many row numbers one part spans}. page-URL lists number rows
    page * ROW_STRIDE + i with at most MAX_IMAGES_PER_PAGE pairs a page: their part spans that many fewer pages,
    so it too holds at most LEDGER_PART_ROWS rows."""
    pages_per_part = LEDGER_PART_ROWS // MAX_IMAGES_PER_PAGE
    return {s.index: ROW_STRIDE * pages_per_part if s.fmt == "page-urls" else LEDGER_PART_ROWS for s in specs}


def part_of(src: int, row: int, spans: dict[int, int]) -> tuple[int, int]:
    return src, row // spans[src]


def part_keys(records):
    """(the part keys that hold at least one input row, the sorted list of them as a side input): one small key
    a part."""
    keys = records | "PartKeys" >> beam.Keys() | "DistinctParts" >> beam.Distinct()
    listed = (keys | "AllParts" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
              | "Sorted" >> beam.Map(sorted))
    return keys, beam.pvalue.AsSingleton(listed, default_value=[])  # no default branch: two stages less


class _Tables:
    """The two ledgers' tables, built from row dicts already in input order."""

    def __init__(self, cfg, specs):
        self.sources = {s.index: s.path for s in specs}
        self.extra_names = [c for c in cfg.extra_cols if c != cfg.page_url_col]
        if detection_on(cfg):  # the row stage tagged every candidate: a dry run's ledger shows the tags too
            self.extra_names += list(LANGUAGE_FIELDS)

    def rejected(self, rows) -> pa.Table:
        columns = {name: [] for name in REJECTED_SCHEMA.names}
        for r in rows:
            for name in ("uid", "url", "caption", "reason", "detail"):
                columns[name].append(r[name])
            columns["source_file"].append(self.sources[r["src"]])
            columns["source_row"].append(r["row"])
        return pa.table(columns, schema=REJECTED_SCHEMA)

    def candidates(self, rows) -> pa.Table:
        """Rows that passed every text and frequency rule: what a real run would fetch."""
        columns = {
            "uid": pa.array([r["uid"] for r in rows], pa.string()),
            "url": pa.array([r["url"] for r in rows], pa.string()),
            "caption": pa.array([r["caption"] for r in rows], pa.string()),
            "page_url": pa.array([r.get("page_url") for r in rows], pa.string()),
            "source_file": pa.array([self.sources[r["src"]] for r in rows], pa.string()),
            "source_row": pa.array([r["row"] for r in rows], pa.int64()),
        }
        for name in self.extra_names:
            columns[name] = [r["extra"].get(name) for r in rows]
        return pa.table(columns)


def _part_path(cfg, name: str, keys: list, key) -> str:
    index, total = (bisect.bisect_left(keys, key), len(keys)) if keys else (0, 1)
    return FileSystems.join(cfg.output, name, ledger_part_name(index, total))


def _write_part(cfg, name: str, keys: list, key, table: pa.Table) -> None:
    write_bytes_atomic(_part_path(cfg, name, keys, key), parquet_bytes(table))


class _PartWriter:
    """Rows in input order -> one ledger part, a row group of CHUNK_ROWS at a time, so a part of a million rows
    never sits in this worker as Python dicts. Row groups go to a local temporary file, copied to the part's
    place (any storage backend) when complete. With extra columns (whose types the rows themselves tell) the
    part's Arrow chunks are kept and concatenated once at the end, with their types unified."""

    CHUNK_ROWS = 16_384

    def __init__(self, path: str, to_table, fixed_schema: bool):
        self.path, self.to_table, self.fixed_schema = path, to_table, fixed_schema
        self.rows: list = []
        self.chunks: list[pa.Table] = []
        self.count = 0
        self._local = self._pq = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.CHUNK_ROWS:
            self._chunk()

    def _chunk(self) -> None:
        self.chunks.append(self.to_table(self.rows))
        self.count += len(self.rows)
        self.rows = []
        if self.fixed_schema and len(self.chunks) > 1:  # keep only the first (its schema) and the newest
            if self._pq is None:
                self._local = tempfile.TemporaryFile()
                self._pq = pq.ParquetWriter(self._local, self.chunks[0].schema, compression="snappy")
                self._pq.write_table(self.chunks[0])
            self._pq.write_table(self.chunks.pop())

    def abort(self) -> None:
        """Drop the half-written part (a failed bundle is retried from the start)."""
        if self._pq is not None:
            self._pq.close()
            self._local.close()
            self._local = self._pq = None

    def close(self) -> int:
        if self.rows or not self.chunks:
            self._chunk()
        if self._pq is None:  # one chunk, or chunks whose types are unified now
            table = self.chunks[0] if len(self.chunks) == 1 else pa.concat_tables(self.chunks, promote_options="default")
            write_bytes_atomic(self.path, parquet_bytes(table))
        else:
            self._pq.close()
            self._local.seek(0)
            with atomic_writer(self.path) as handle:
                shutil.copyfileobj(self._local, handle, 1 << 20)
            self.abort()
        return self.count


class ApplyVerdicts(beam.DoFn):
    """One ledger part: its rows' records and their verdicts -> rejected rows and kept rows, in input order.

    Records and verdicts arrive in batches, each sorted by input position (see ``packed.pack_batch``); they are
    merged into two sorted streams and walked in step, so this worker holds the part's packed batches and one
    row group being written, never the part as dicts. In a dry run it writes the part of both ledgers; otherwise
    kept rows go on to the fetch stage as (url, row) and rejected rows to ``WriteRejected``, which merges them with
    the fetch stage's. Outputs per-part counters (REASONS, WRITTEN).
    """

    def __init__(self, cfg, specs):
        self.cfg = cfg
        self.specs = specs

    def setup(self):
        self.tables = _Tables(self.cfg, self.specs)

    def _verdicts_of(self, key, batches):
        """(row dict, reason or None, detail) for every row of the part, in input order."""
        src = key[0]
        record_batches = [b for b in batches if b[:1] == packed.RECORD]
        verdict_batches = [b for b in batches if b[:1] == packed.VERDICT]
        records = heapq.merge(*map(packed.iter_batch, record_batches))
        verdicts = heapq.merge(*map(packed.iter_batch, verdict_batches))
        pending = next(verdicts, None)
        for record in records:
            cand, code, detail, final = packed.unpack_record(src, record)
            if not final:
                if pending is None or packed.row_of(pending) != cand["row"]:
                    raise RuntimeError(
                        f"no verdict reached input file {src} row {cand['row']} (ledger part {key}: "
                        f"{len(record_batches)} record and {len(verdict_batches)} verdict batches, the next verdict "
                        f"is for row {None if pending is None else packed.row_of(pending)}); this is a bug, please "
                        "report it")
                _, code, verdict_detail = packed.unpack_verdict(pending)
                if verdict_detail:
                    detail = verdict_detail.decode("utf-8", errors="surrogatepass")
                pending = next(verdicts, None)
            yield cand, packed.REASON_OF[code], detail
        if pending is not None:
            raise RuntimeError(f"a verdict for a row that was never read: file {src} row {packed.row_of(pending)}")

    def process(self, kv, keys):
        key, batches = kv
        counts: dict[str, int] = {}
        if self.cfg.dry_run:
            rejected = _PartWriter(_part_path(self.cfg, REJECTED, keys, key), self.tables.rejected, True)
            kept = _PartWriter(_part_path(self.cfg, CANDIDATES, keys, key), self.tables.candidates,
                               not self.tables.extra_names)
        try:
            for cand, reason, detail in self._verdicts_of(key, batches):
                if reason is None:
                    if self.cfg.dry_run:
                        kept.add(cand)
                    else:
                        yield cand["url"], cand
                    continue
                counts[reason] = counts.get(reason, 0) + 1
                row = reject(cand, reason, detail)
                if self.cfg.dry_run:
                    rejected.add(row)
                else:
                    yield emit(REJECTS, (key, row))
            if self.cfg.dry_run:
                written = {"rejected": rejected.close(), "candidates": kept.close()}
        except BaseException:
            if self.cfg.dry_run:
                rejected.abort()
                kept.abort()
            raise
        yield emit(REASONS, counts)
        if self.cfg.dry_run:
            yield emit(WRITTEN, written)


def write_empty_ledgers(cfg, specs, keys) -> int:
    """When the input had no rows there is no part to write: part 0 of 1, empty, so readers find the schema."""
    if not keys:
        tables = _Tables(cfg, specs)
        _write_part(cfg, REJECTED, keys, None, tables.rejected([]))
        if cfg.dry_run:
            _write_part(cfg, CANDIDATES, keys, None, tables.candidates([]))
    return 0


class WriteRejected(beam.PTransform):
    """(part key, rejected row) -> DIR/rejected/part-I-of-N.parquet, one part for each input part (empty ones
    too: every part key enters the group once, as None); outputs the number of rows written."""

    def __init__(self, cfg, specs, part_keys, keys_side):
        super().__init__()
        self.cfg = cfg
        self.specs = specs
        self.part_keys = part_keys
        self.keys_side = keys_side

    def expand(self, rows):
        every_part = self.part_keys | "EveryPart" >> beam.Map(lambda key: (key, None))
        return (
            (rows, every_part)
            | "RowsAndParts" >> beam.Flatten()
            | "GroupPart" >> beam.GroupByKey()  # one key per part: at most LEDGER_PART_ROWS rows each
            | "WritePart" >> beam.Map(self._write, keys=self.keys_side)
            | "Rows" >> beam.CombineGlobally(sum).without_defaults()  # no input row, no part: see the caller
        )

    def _write(self, kv, keys):
        key, rows = kv
        rows = sorted((r for r in rows if r is not None), key=lambda r: r["row"])  # bounded: one part
        _write_part(self.cfg, REJECTED, keys, key, _Tables(self.cfg, self.specs).rejected(rows))
        return len(rows)

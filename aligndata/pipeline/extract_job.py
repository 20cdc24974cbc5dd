"""``aligndata extract``: HTML files, WARC/ARC files or page-URL lists -> one pairs table (parquet), no images.

The job is cut into *units* in the driver: a WARC file, a group of HTML files, or a group of page URLs. A Beam
DoFn processes a unit and writes its rows, in input order, to ``part-NNNNNN.parquet`` plus its counters to
``part-NNNNNN.stats.json`` in a run directory beside the output (each written to a temporary name and renamed,
so a retried unit simply rewrites its own part). Rows never cross a shuffle. After the pipeline, the driver
concatenates the parts in unit order into the output file (so the same input gives the same table on every
runner), sums the counters into the report, and removes the run directory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from aligndata.extract.pages import (
    DEFAULT_MAX_PAGE_BYTES,
    ExtractStats,
    iter_html_rows,
    iter_warc_rows,
    load_page_url_map,
    pairs_from_page,
    read_page_url_list,
)
from aligndata.fetch.options import FETCH_OPTIONS
from aligndata.filters.options import options_dataclass
from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.io.inputs import WEB_FORMATS, InputError, detect_format, match_inputs
from aligndata.pipeline.sources import check_readable

_log = logging.getLogger(__name__)
HTML_FILES_PER_UNIT = 256
PAGES_PER_UNIT = 256

SCHEMA = pa.schema([
    ("url", pa.string()),
    ("caption", pa.string()),
    ("page_url", pa.string()),
    ("img_width", pa.int32()),
    ("img_height", pa.int32()),
    ("title", pa.string()),
])
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class _ExtractRun:
    inputs: tuple[str, ...]
    output: str  # the pairs parquet file
    input_format: str = "auto"  # html, warc, page-urls, or auto (from the file names)
    page_urls: str | None = None  # html: JSON file mapping file names to page URLs
    report: str | None = None  # default: OUTPUT with .parquet replaced by .report.json
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    overwrite: bool = False
    skip_unreadable: bool = False  # files that cannot be read are named in the report instead of stopping the run
    allow_empty: bool = False  # no pair at all is not an error (the command exits 0)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def report_path(self) -> str:
        if self.report:
            return self.report
        stem = self.output.removesuffix(".parquet")
        return stem + ".report.json"

    @property
    def run_dir(self) -> str:
        directory, name = FileSystems.split(self.output)
        return FileSystems.join(directory or ".", f".{name}.parts-{self.run_id}")

    def fetch_config(self):
        from aligndata.fetch.client import FetchConfig

        return FetchConfig.from_options(self, max_bytes=self.max_page_bytes)


# Page-URL fetching takes exactly curate's fetch options (fetch/options.py): guard, politeness, robots.txt.
ExtractConfig = options_dataclass("ExtractConfig", _ExtractRun, FETCH_OPTIONS, module=__name__)


# ------------------------------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One piece of work: its part number, the input format, and (src index, path or URL, page index) items."""

    part: int
    fmt: str
    items: tuple[tuple[int, str, int], ...]


def plan_units(cfg: ExtractConfig) -> tuple[list[str], list[Unit], ExtractStats]:
    """Match inputs and cut the job into units. Returns (input paths, units, driver-side counters)."""
    paths = match_inputs(list(cfg.inputs), cfg.input_format, WEB_FORMATS)
    fmts = {detect_format(p, cfg.input_format, WEB_FORMATS) for p in paths}
    if len(fmts) > 1:
        raise InputError(f"inputs mix formats ({', '.join(sorted(fmts))}); run one format at a time or pass "
                         "--input-format")
    fmt = fmts.pop()
    if cfg.page_urls and fmt != "html":
        raise InputError("--page-urls (file -> URL mapping) applies to --input-format html only")
    driver_stats = ExtractStats()
    units: list[Unit] = []
    if fmt == "warc":
        units = [Unit(i, fmt, ((i, p, 0),)) for i, p in enumerate(paths)]
    elif fmt == "html":
        items = [(i, p, 0) for i, p in enumerate(paths)]
        units = [Unit(n, fmt, tuple(items[k:k + HTML_FILES_PER_UNIT]))
                 for n, k in enumerate(range(0, len(items), HTML_FILES_PER_UNIT))]
    else:
        for src, path in enumerate(paths):
            driver_stats.files += 1
            try:
                urls = read_page_url_list(path)
            except ValueError as exc:
                if not cfg.skip_unreadable:
                    raise InputError(f"{exc} (pass --skip-unreadable to skip such files)") from None
                driver_stats.unreadable_files.append({"file": path, "error": str(exc)})
                continue
            items = [(src, url, page) for page, url in enumerate(urls)]
            for k in range(0, len(items), PAGES_PER_UNIT):
                units.append(Unit(len(units), fmt, tuple(items[k:k + PAGES_PER_UNIT])))
    return paths, units, driver_stats


def part_path(run_dir: str, part: int, suffix: str) -> str:
    return FileSystems.join(run_dir, f"part-{part:06d}{suffix}")


def rows_to_table(rows: list[dict]) -> pa.Table:
    def dim(value):
        return value if isinstance(value, int) and 0 <= value <= _INT32_MAX else None

    columns = {
        "url": [r["url"] for r in rows],
        "caption": [r["text"] for r in rows],
        "page_url": [r["extra"].get("page_url") for r in rows],
        "img_width": [dim(r["extra"].get("img_width")) for r in rows],
        "img_height": [dim(r["extra"].get("img_height")) for r in rows],
        "title": [r["extra"].get("title") for r in rows],
    }
    return pa.table(columns, schema=SCHEMA)


class ExtractUnit(beam.DoFn):
    """Extract one unit and write its part and counters; emits the part number."""

    def __init__(self, cfg: ExtractConfig, page_url_map: dict[str, str] | None):
        self.cfg = cfg
        self.page_url_map = page_url_map
        self.fetcher = None

    def setup(self):
        if self.cfg.input_format == "page-urls":
            from aligndata.fetch.client import Fetcher

            self.fetcher = Fetcher(self.cfg.fetch_config())

    def teardown(self):
        if self.fetcher is not None:
            self.fetcher.close()

    def process(self, unit: Unit):
        stats = ExtractStats()
        rows: list[dict] = []
        if unit.fmt == "warc":
            for src, path, _ in unit.items:
                rows.extend(iter_warc_rows(path, src, stats, self.cfg.max_page_bytes))
        elif unit.fmt == "html":
            for src, path, _ in unit.items:
                rows.extend(iter_html_rows(path, src, self.page_url_map, stats, self.cfg.max_page_bytes))
        else:
            rows = self._fetch_pages(unit, stats)
        check_readable(stats, self.cfg.skip_unreadable)  # the whole job stops, naming the file
        buffer = io.BytesIO()
        pq.write_table(rows_to_table(rows), buffer)
        write_bytes_atomic(part_path(self.cfg.run_dir, unit.part, ".parquet"), buffer.getvalue())
        write_json_atomic(part_path(self.cfg.run_dir, unit.part, ".stats.json"), stats.to_json())
        yield unit.part

    def _fetch_pages(self, unit: Unit, stats: ExtractStats) -> list[dict]:
        # Fetching is I/O-bound: pages of a unit are fetched concurrently; map() keeps the input order.
        def one(item):
            src, url, page = item
            return pairs_from_page(url, self.fetcher, src, page)

        rows: list[dict] = []
        with ThreadPoolExecutor(max_workers=min(self.cfg.fetch_threads, len(unit.items)) or 1) as pool:
            for page_rows, page_stats in pool.map(one, unit.items):
                rows.extend(page_rows)
                stats.merge(page_stats)
        return rows


# ------------------------------------------------------------------------------------------------- driver


def _merge_parts(cfg: ExtractConfig, units: list[Unit]) -> tuple[int, ExtractStats]:
    """Concatenate the parts in unit order into the output file (temp name + rename); sum the counters."""
    stats = ExtractStats()
    directory, name = FileSystems.split(cfg.output)
    temp = FileSystems.join(directory or ".", f".{name}.tmp-{cfg.run_id}")
    rows = 0
    with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as sink:
        with pq.ParquetWriter(sink, SCHEMA) as writer:
            for unit in units:
                with FileSystems.open(part_path(cfg.run_dir, unit.part, ".parquet"),
                                      compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    table = pq.read_table(f)
                if table.num_rows:
                    writer.write_table(table)
                    rows += table.num_rows
                with FileSystems.open(part_path(cfg.run_dir, unit.part, ".stats.json"),
                                      compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    stats.merge(ExtractStats.from_json(json.load(f)))
    FileSystems.rename([temp], [cfg.output])
    return rows, stats


def _remove_tree(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as exc:  # noqa: BLE001 - leftover temp files are not worth failing a finished run
        _log.warning("could not remove %s: %s", path, exc)


def run_extract(cfg: ExtractConfig, beam_args: list[str] | None = None) -> dict:
    """Run the whole extract job; returns the report (also written to ``cfg.report_path``)."""
    from aligndata.pipeline.run import new_pipeline, pipeline_options, worker_input_errors

    for path in (cfg.output, cfg.report_path):
        if FileSystems.exists(path) and not cfg.overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it")
    paths, units, driver_stats = plan_units(cfg)
    fmt = units[0].fmt if units else detect_format(paths[0], cfg.input_format, WEB_FORMATS)
    cfg = dataclasses.replace(cfg, input_format=fmt)
    page_url_map = None
    if cfg.page_urls:
        try:
            page_url_map = load_page_url_map(cfg.page_urls)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if not FileSystems.exists(cfg.run_dir):
        FileSystems.mkdirs(cfg.run_dir)
    try:
        with worker_input_errors(), new_pipeline(pipeline_options(beam_args or [])) as p:
            _ = (
                p
                | "Units" >> beam.Create(units)
                | "Spread" >> beam.Reshuffle()  # one worker per unit, not one per Create bundle
                | "Extract" >> beam.ParDo(ExtractUnit(cfg, page_url_map))
            )
        rows, stats = _merge_parts(cfg, units)
    finally:
        _remove_tree(cfg.run_dir)
    stats.merge(driver_stats)
    report = {
        "input_format": fmt,
        "input_files": paths,
        "output": cfg.output,
        "rows": rows,
        "extraction": stats.to_json(),
    }
    write_json_atomic(cfg.report_path, report)
    return report

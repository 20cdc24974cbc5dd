"""Reading pairs tables (parquet, csv, tsv, jsonl; optionally gzipped) from any Beam filesystem.

Files are checked in the driver before the pipeline starts (so a wrong column name stops the run with a message
that names the file and lists the columns found), then streamed row by row inside the pipeline: a file is never
held in memory whole.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from dataclasses import dataclass
from typing import Iterator

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

TABLE_FORMATS = ("parquet", "csv", "tsv", "jsonl")
# Web sources: pairs are extracted from <img> tags (aligndata.extract); page-urls lists are fetched first.
WEB_FORMATS = ("html", "warc", "page-urls")
FORMATS = TABLE_FORMATS + WEB_FORMATS
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".warc": "warc",
    ".arc": "warc",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2")
PARQUET_BATCH_ROWS = 8192


class InputError(Exception):
    """A problem with the user's input files; the message is shown as is, without a traceback."""


@dataclass(frozen=True)
class InputSpec:
    """How to read one input file: where, which format, which columns."""

    path: str
    index: int  # position in the sorted list of matched files; used to order rows deterministically
    fmt: str
    url_col: str
    caption_col: str
    extra_cols: tuple[str, ...] = ()
    header: bool = True
    page_url: str | None = None  # html inputs: the page's URL (from --page-urls), for resolving relative srcs


def match_inputs(patterns: list[str]) -> list[str]:
    """Expand globs on any Beam filesystem; every pattern must match at least one file."""
    paths: list[str] = []
    for pattern in patterns:
        try:
            result = FileSystems.match([pattern])[0]
        except Exception as exc:  # Beam raises BeamIOError with nested causes
            raise InputError(f"cannot list input {pattern!r}: {exc}") from None
        matched = sorted(m.path for m in result.metadata_list if not m.path.endswith("/"))
        if not matched:
            raise InputError(f"no input file matches {pattern!r}")
        paths.extend(matched)
    # The same file named twice (two overlapping globs) would double-count its rows.
    return sorted(dict.fromkeys(paths))


def detect_format(path: str, requested: str = "auto") -> str:
    if requested != "auto":
        if requested not in FORMATS:
            raise InputError(f"unknown input format {requested!r}; choose from auto, {', '.join(FORMATS)}")
        return requested
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise InputError(f"cannot tell the format of {path!r} from its name; pass --input-format")


def _open_text(path: str) -> io.TextIOWrapper:
    # Beam's own decompressing reader is not an io.BufferedIOBase; the stdlib ones are, and stream just as well.
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    lower = path.lower()
    if lower.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    elif lower.endswith(".bz2"):
        raw = bz2.BZ2File(raw, mode="rb")
    # Undecodable bytes become U+FFFD; the row is then rejected as invalid_row (broken encoding), not the file.
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _csv_reader(f, fmt: str):
    csv.field_size_limit(1 << 24)
    return csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")


def read_columns(spec: InputSpec) -> list[str]:
    """The column names a file offers (positional names "0", "1", ... for header-less csv/tsv)."""
    if spec.fmt == "parquet":
        with FileSystems.open(spec.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return list(pq.ParquetFile(f).schema_arrow.names)
    with _open_text(spec.path) as f:
        if spec.fmt == "jsonl":
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise InputError(f"{spec.path}: line 1 is not a JSON object")
                    return list(obj)
            return []
        first = next(_csv_reader(f, spec.fmt), [])
        return [str(i) for i in range(len(first))] if not spec.header else first


def check_input(spec: InputSpec) -> None:
    """Fail early, naming the file and the columns it has, when a requested column is missing."""
    if spec.fmt in WEB_FORMATS:
        return  # no columns; unreadable files and damaged records are counted in report.json's extraction part
    try:
        columns = read_columns(spec)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {spec.path} as {spec.fmt}: {type(exc).__name__}: {exc}") from None
    if spec.fmt == "jsonl" and not columns:
        return  # an empty file: nothing to check, nothing to read
    wanted = [("--url-col", spec.url_col), ("--caption-col", spec.caption_col)]
    wanted += [("--extra-cols", c) for c in spec.extra_cols]
    for option, column in wanted:
        if column not in columns:
            raise InputError(
                f"{spec.path}: no column {column!r} (from {option}); columns found: {', '.join(map(repr, columns))}"
            )


def known_row_count(specs: list[InputSpec]) -> int | None:
    """Total rows when every file states it cheaply (parquet footers); None otherwise (csv, jsonl)."""
    total = 0
    for spec in specs:
        if spec.fmt != "parquet":
            return None
        with FileSystems.open(spec.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def _cell(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _extra_value(value):
    """Extra columns travel into each sample's .json: keep JSON-friendly scalars, stringify the rest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def iter_rows(spec: InputSpec, extraction_stats=None) -> Iterator[dict]:
    """Yield {"src", "row", "url", "text", "extra"} for every row of one file, streaming.

    html and warc files yield one row per extracted <img> pair (counters go to ``extraction_stats``, an
    ``aligndata.extract.pages.ExtractStats``); page-urls lists are not rows yet (see curate.FetchPages).
    """
    if spec.fmt in ("html", "warc"):
        from aligndata.extract.pages import iter_html_rows, iter_warc_rows

        if spec.fmt == "html":
            page_urls = {spec.path: spec.page_url} if spec.page_url else None
            yield from iter_html_rows(spec.path, spec.index, page_urls, extraction_stats)
        else:
            yield from iter_warc_rows(spec.path, spec.index, extraction_stats)
        return
    try:
        yield from _iter_rows(spec)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {spec.path} as {spec.fmt}: {type(exc).__name__}: {exc}") from exc


def _row(spec: InputSpec, index: int, url, text, extra: dict) -> dict:
    return {"src": spec.index, "row": index, "url": _cell(url), "text": _cell(text), "extra": extra}


def _iter_rows(spec: InputSpec) -> Iterator[dict]:
    extras = spec.extra_cols
    if spec.fmt == "parquet":
        columns = list(dict.fromkeys([spec.url_col, spec.caption_col, *extras]))
        with FileSystems.open(spec.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            index = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                data = batch.to_pydict()
                urls, texts = data[spec.url_col], data[spec.caption_col]
                extra_values = [data[c] for c in extras]
                for i in range(len(urls)):
                    extra = {c: _extra_value(v[i]) for c, v in zip(extras, extra_values)}
                    yield _row(spec, index, urls[i], texts[i], extra)
                    index += 1
        return
    with _open_text(spec.path) as f:
        if spec.fmt == "jsonl":
            for index, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    # Kept in the ledger as invalid_row rather than stopping a long run on one bad line.
                    yield _row(spec, index, None, None, {c: None for c in extras}) | {"bad": "unparsable_json_line"}
                    continue
                extra = {c: _extra_value(obj.get(c)) for c in extras}
                yield _row(spec, index, obj.get(spec.url_col), obj.get(spec.caption_col), extra)
            return
        reader = _csv_reader(f, spec.fmt)
        if spec.header:
            header = next(reader, [])
        else:
            header = None
        positions = None
        for index, cells in enumerate(reader):
            if positions is None:
                names = header if header is not None else [str(i) for i in range(len(cells))]
                positions = {name: i for i, name in enumerate(names)}
            if not cells:
                continue

            def get(column, cells=cells):
                i = positions.get(column)
                return cells[i] if i is not None and i < len(cells) else None

            extra = {c: get(c) for c in extras}
            yield _row(spec, index, get(spec.url_col), get(spec.caption_col), extra)

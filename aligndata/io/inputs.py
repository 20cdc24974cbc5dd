"""The user's inputs: which files (``match_inputs``), in which format (``detect_format``), read how (``InputSpec``).

An input is a file or a glob, on any backend of ``aligndata.io.storage``. Globs use Beam's semantics (``*`` stays
within a directory, ``**`` crosses directories), as they always have.
"""

from __future__ import annotations

from dataclasses import dataclass

from aligndata.io.storage import storage_for

TABLE_FORMATS = ("parquet", "csv", "tsv", "jsonl")
# Web sources: pairs are extracted from <img> tags (aligndata.extract); page-urls lists are fetched first.
WEB_FORMATS = ("html", "warc", "page-urls")
FORMATS = TABLE_FORMATS + WEB_FORMATS
SUFFIXES = {  # file name suffix -> format, for --input-format auto (page-urls is never guessed)
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
COMPRESSION_SUFFIXES = (".gz", ".bz2")


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


def _strip_compression(name: str) -> str:
    name = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def format_from_name(path: str) -> str | None:
    """The format a file's name tells (``.csv.gz`` -> csv, ``.warc`` -> warc), or None."""
    name = _strip_compression(path)
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def detect_format(path: str, requested: str = "auto", formats: tuple[str, ...] = FORMATS) -> str:
    """``requested`` when it is not "auto", else the format ``path``'s name tells; ``formats``: those accepted."""
    if requested != "auto":
        if requested not in formats:
            raise InputError(f"unknown --input-format {requested!r}; choose from auto, {', '.join(formats)}")
        return requested
    fmt = format_from_name(path)
    if fmt not in formats:
        raise InputError(f"cannot tell the format of {path!r} from its name ({', '.join(formats)}); "
                         "pass --input-format")
    return fmt


def match_inputs(patterns: list[str]) -> list[str]:
    """The input files, globs expanded; sorted, without repeats. Every pattern must match at least one file."""
    paths: list[str] = []
    for pattern in patterns:
        try:
            matched = storage_for(pattern).match(pattern)
        except Exception as exc:  # each backend raises its own (StorageError, OSError, BeamIOError, ...)
            raise InputError(f"cannot list input {pattern!r}: {exc}") from None
        if not matched:
            raise InputError(f"no input file matches {pattern!r}")
        paths.extend(matched)
    # The same file named twice (two overlapping globs) would double-count its rows.
    return sorted(dict.fromkeys(paths))

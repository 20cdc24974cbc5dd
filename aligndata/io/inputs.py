"""The user's inputs: which files (``match_inputs``), in which format (``detect_format``), read how (``InputSpec``).

An input is a file, a glob, or a directory, on any backend of ``aligndata.io.storage``. A directory means its
files: for web formats (html, warc, page-urls) every file below it, recursively, whose name has that format's
extension (optionally compressed: ``.gz``, ``.bz2``); for tables, the files directly in it with a table extension.
Hidden names (starting with ".") are left out of directories. Globs use Beam's semantics (``*`` stays within a
directory, ``**`` crosses directories), as they always have.
"""

from __future__ import annotations

from dataclasses import dataclass

from aligndata.io.storage import has_glob, storage_for

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
# In a directory given with --input-format page-urls: the names a page-URL list has (JSON, or one URL a line).
PAGE_URL_SUFFIXES = (".txt", ".json")
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
    # web inputs: a file that cannot be read is named in report.json (True) instead of stopping the run (False)
    skip_unreadable: bool = False


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


def _wanted_in_directory(relative: str, requested: str, formats: tuple[str, ...]) -> bool:
    """Whether a file at ``relative`` (its path below the directory given as input) is one of its inputs."""
    parts = relative.replace("\\", "/").split("/")
    if any(part.startswith(".") for part in parts):
        return False
    if requested == "page-urls":
        fmt = "page-urls" if _strip_compression(parts[-1]).endswith(PAGE_URL_SUFFIXES) else None
    else:
        fmt = format_from_name(parts[-1])
    if fmt is None or fmt not in formats or requested not in ("auto", fmt):
        return False
    return fmt in WEB_FORMATS or len(parts) == 1  # tables: only the directory's own files


def _directory_inputs(storage, directory: str, requested: str, formats: tuple[str, ...]) -> list[str]:
    top = storage.join(directory, "")
    out = []
    for path in storage.list_files(directory):
        relative = path[len(top):] if path.startswith(top) else storage.basename(path)
        if _wanted_in_directory(relative, requested, formats):
            out.append(path)
    return out


def match_inputs(patterns: list[str], requested: str = "auto", formats: tuple[str, ...] = FORMATS) -> list[str]:
    """The input files: globs expanded, directories listed (see the module docstring); sorted, without repeats.

    Every pattern must match at least one file. ``requested`` is --input-format, which decides what a
    directory holds; ``formats`` are the formats the command reads."""
    paths: list[str] = []
    for pattern in patterns:
        try:
            storage = storage_for(pattern)
            if not has_glob(pattern) and storage.isdir(pattern):
                matched = _directory_inputs(storage, pattern, requested, formats)
                if not matched:
                    kinds = ", ".join(f for f in formats if f != "page-urls") if requested == "auto" else requested
                    raise InputError(f"no input file in directory {pattern!r} (looked for {kinds} files by "
                                     "their extensions; pass --input-format or name the files)")
            else:
                matched = storage.match(pattern)
        except InputError:
            raise
        except Exception as exc:  # each backend raises its own (StorageError, OSError, BeamIOError, ...)
            raise InputError(f"cannot list input {pattern!r}: {exc}") from None
        if not matched:
            raise InputError(f"no input file matches {pattern!r}")
        paths.extend(matched)
    # The same file named twice (two overlapping globs) would double-count its rows.
    return sorted(dict.fromkeys(paths))

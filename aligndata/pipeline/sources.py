"""Rows from any input file, in the pipeline's raw-row format ``{"src", "row", "url", "text", "extra"}``.

Tables are read by ``aligndata.io.tables``; html and warc files by ``aligndata.extract.pages`` (one row per
extracted <img> pair); page-urls lists give page URLs, whose pages the pipeline fetches (curate.FetchPages).
A web file that cannot be read at all stops the run (InputError, naming it) unless its spec says
``skip_unreadable``; then it is named in the extraction counters (report.json's ``unreadable_files``).
"""

from __future__ import annotations

from collections.abc import Iterator

from aligndata.extract.pages import ExtractStats, iter_html_rows, iter_warc_rows, read_page_url_list
from aligndata.io.inputs import InputError, InputSpec
from aligndata.io.tables import iter_table_rows


def unreadable_error(unreadable: dict) -> InputError:
    return InputError(f"cannot read input {unreadable['file']}: {unreadable['error']} "
                      "(pass --skip-unreadable to skip such files; they are then listed in the report)")


def check_readable(stats: ExtractStats, skip_unreadable: bool, since: int = 0) -> None:
    """Raise for the first file found unreadable (after the first ``since``), unless such files are skipped."""
    if not skip_unreadable and len(stats.unreadable_files) > since:
        raise unreadable_error(stats.unreadable_files[since])


def iter_rows(spec: InputSpec, extraction_stats: ExtractStats | None = None) -> Iterator[dict]:
    """Yield every row of one file, streaming. html and warc counters go to ``extraction_stats``."""
    if spec.fmt in ("html", "warc"):
        stats = extraction_stats if extraction_stats is not None else ExtractStats()
        before = len(stats.unreadable_files)
        if spec.fmt == "html":
            page_urls = {spec.path: spec.page_url} if spec.page_url else None
            yield from iter_html_rows(spec.path, spec.index, page_urls, stats)
        else:
            yield from iter_warc_rows(spec.path, spec.index, stats)
        check_readable(stats, spec.skip_unreadable, before)
        return
    yield from iter_table_rows(spec)


def page_urls(spec: InputSpec, stats: ExtractStats) -> list[str]:
    """The page URLs of a page-urls list; [] (the file named in ``stats``) when it cannot be read and
    ``spec.skip_unreadable``."""
    try:
        return read_page_url_list(spec.path)
    except ValueError as exc:
        if not spec.skip_unreadable:
            raise InputError(f"{exc} (pass --skip-unreadable to skip such files)") from None
        stats.unreadable_files.append({"file": spec.path, "error": str(exc)})
        return []

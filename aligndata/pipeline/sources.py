"""Rows from any input file, in the pipeline's raw-row format ``{"src", "row", "url", "text", "extra"}``.

Tables are read by ``aligndata.io.tables``; html and warc files by ``aligndata.extract.pages`` (one row per
extracted <img> pair); page-urls lists give page URLs, whose pages the pipeline fetches (curate.FetchPages).
"""

from __future__ import annotations

from collections.abc import Iterator

from aligndata.extract.pages import iter_html_rows, iter_warc_rows
from aligndata.io.inputs import InputSpec
from aligndata.io.tables import iter_table_rows


def iter_rows(spec: InputSpec, extraction_stats=None) -> Iterator[dict]:
    """Yield every row of one file, streaming. html and warc counters go to ``extraction_stats`` (an
    ``aligndata.extract.pages.ExtractStats``)."""
    if spec.fmt == "html":
        page_urls = {spec.path: spec.page_url} if spec.page_url else None
        yield from iter_html_rows(spec.path, spec.index, page_urls, extraction_stats)
    elif spec.fmt == "warc":
        yield from iter_warc_rows(spec.path, spec.index, extraction_stats)
    else:
        yield from iter_table_rows(spec)

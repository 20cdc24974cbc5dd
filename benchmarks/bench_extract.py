"""Extraction speed: HTML parsers and WARC readers measured on the real pages, and our whole extraction.

    .venv/bin/python benchmarks/bench_extract.py [--repeat 3]

HTML: the 181 real article pages (html/pages/*.html.gz, decoded once beforehand): parse and collect every
<img>'s attributes, with selectolax (lexbor), lxml, resiliparse and the stdlib html.parser; then our whole
per-page extraction (decode + parse + rules) for the same pages.
WARC: the real Common Crawl WARC (16 HTML responses in 50 records) read N times over: iterate the records and
read response bodies with warcio, fastwarc and our reader; then our whole WARC extraction (records -> rows).
Robustness: what each reader does with the real malformed WARCs (records read, or the error that stopped it).
Candidates that are not installed are reported as such (pip install warcio fastwarc lxml resiliparse).
Writes benchmarks/results/extract.json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import time
from collections import Counter
from html.parser import HTMLParser

from common import REAL, emit

from aligndata.extract import html as rules
from aligndata.extract.pages import ExtractStats, iter_warc_rows
from aligndata.extract.warc import iter_records

WARC_READS = 40  # the sample WARC is small: read it this many times per measurement


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


# ------------------------------------------------------------------------------------------- HTML parsers


def parse_selectolax(text: str) -> int:
    from selectolax.lexbor import LexborHTMLParser

    return len([dict(n.attributes) for n in LexborHTMLParser(text).css("img")])


def parse_lxml(text: str) -> int:
    import lxml.html

    return len([dict(e.attrib) for e in lxml.html.document_fromstring(text).iter("img")])


def parse_resiliparse(text: str) -> int:
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(text)
    return len([{k: e.getattr(k) for k in e.attrs} for e in tree.document.query_selector_all("img")])


class _StdlibImgs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def parse_stdlib(text: str) -> int:
    parser = _StdlibImgs()
    parser.feed(text)
    parser.close()
    return len(parser.images)


PARSERS = {"selectolax_lexbor": parse_selectolax, "lxml": parse_lxml, "resiliparse": parse_resiliparse,
           "stdlib_html_parser": parse_stdlib}


def bench_parsers(raw_pages: list[bytes], repeat: int) -> dict:
    texts = [rules.decode_html(b)[0] for b in raw_pages]
    megabytes = sum(map(len, raw_pages)) / 1e6
    out = {}
    for name, parse in PARSERS.items():
        try:
            images = sum(parse(t) for t in texts)
        except ImportError as exc:
            out[name] = {"installed": False, "error": str(exc)}
            continue
        seconds = best_time(lambda parse=parse: [parse(t) for t in texts], repeat)
        out[name] = {"pages_per_s": round(len(texts) / seconds, 1), "mb_per_s": round(megabytes / seconds, 1),
                     "img_found": images}
    seconds = best_time(lambda: [rules.extract_pairs(rules.decode_html(b)[0], None) for b in raw_pages], repeat)
    out["aligndata_extract_pairs"] = {"pages_per_s": round(len(raw_pages) / seconds, 1),
                                      "mb_per_s": round(megabytes / seconds, 1),
                                      "note": "decode + parse + rules, from bytes"}
    return out


# -------------------------------------------------------------------------------------------- WARC readers


def read_warcio(data: bytes) -> int:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    for record in ArchiveIterator(io.BytesIO(data)):
        if record.rec_type == "response":
            record.content_stream().read()
            n += 1
    return n


def read_fastwarc(data: bytes) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for record in ArchiveIterator(io.BytesIO(data), record_types=WarcRecordType.response, parse_http=True):
        record.reader.read()
        n += 1
    return n


def read_ours(data: bytes) -> int:
    return sum(1 for r in iter_records(io.BytesIO(data), Counter()) if r.rec_type == "response")


READERS = {"warcio": read_warcio, "fastwarc": read_fastwarc, "aligndata": read_ours}


def bench_readers(repeat: int) -> dict:
    data = (REAL / "warc" / "commoncrawl_2020_34_sample.warc.gz").read_bytes()
    plain = gzip.decompress(data)
    out = {}
    for name, read in READERS.items():
        try:
            responses = read(data)
        except ImportError as exc:
            out[name] = {"installed": False, "error": str(exc)}
            continue
        entry = {"responses": responses}
        for label, blob in (("gz", data), ("plain", plain)):
            seconds = best_time(lambda blob=blob, read=read: [read(blob) for _ in range(WARC_READS)], repeat)
            entry[f"{label}_responses_per_s"] = round(WARC_READS * responses / seconds)
            entry[f"{label}_mb_per_s"] = round(WARC_READS * len(plain) / 1e6 / seconds, 1)
        out[name] = entry
    return out


def bench_warc_extraction(repeat: int) -> dict:
    path = str(REAL / "warc" / "commoncrawl_2020_34_sample.warc.gz")
    stats = ExtractStats()
    pairs = len(list(iter_warc_rows(path, 0, stats)))
    seconds = best_time(lambda: [list(iter_warc_rows(path, 0)) for _ in range(10)], repeat)
    return {"pages_per_s": round(10 * stats.pages_parsed / seconds, 1), "pages": stats.pages_parsed, "pairs": pairs}


def robustness() -> dict:
    out = {}
    for path in sorted((REAL / "warc").glob("*.warc*")):
        data = path.read_bytes()
        row = {}
        for name, read in READERS.items():
            def count_all(name=name, data=data):
                if name == "aligndata":
                    return sum(1 for _ in iter_records(io.BytesIO(data), Counter()))
                if name == "warcio":
                    from warcio.archiveiterator import ArchiveIterator

                    return sum(1 for r in ArchiveIterator(io.BytesIO(data)) if r.content_stream().read() or True)
                from fastwarc.warc import ArchiveIterator

                return sum(1 for r in ArchiveIterator(io.BytesIO(data), parse_http=False) if r.reader.read() or True)

            try:
                row[name] = {"records": count_all()}
            except ImportError:
                row[name] = {"installed": False}
            except Exception as exc:  # noqa: BLE001 - what stops a reader is the measurement
                row[name] = {"stopped_by": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:80]}"}
        out[path.name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pages_dir = REAL / "html" / "pages"
    if not pages_dir.exists():
        sys.exit(f"benchmark needs the real pages in {pages_dir}")
    raw_pages = [gzip.decompress(p.read_bytes()) for p in sorted(pages_dir.glob("*.html.gz"))]
    emit("extract", {
        "pages": len(raw_pages),
        "html_mb": round(sum(map(len, raw_pages)) / 1e6, 1),
        "html_parsers": bench_parsers(raw_pages, args.repeat),
        "warc_readers": bench_readers(args.repeat),
        "warc_extraction": bench_warc_extraction(args.repeat),
        "malformed_warcs": robustness(),
    })


if __name__ == "__main__":
    main()

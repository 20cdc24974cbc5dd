"""The ``aligndata extract`` sub-command: ``register(subparsers)`` adds it to the CLI."""

from __future__ import annotations

import argparse
import sys

from aligndata.commands import standalone_main
from aligndata.fetch.options import FETCH_OPTIONS
from aligndata.filters.options import positive_int as _positive_int

EXTRACT_EPILOG = """\
Inputs: .html/.html.gz files (--input-format html; page URLs from --page-urls FILE.json, else <base href>),
WARC/ARC files, gzipped or not (--input-format warc), or lists of page URLs to fetch (--input-format page-urls:
a JSON array, a JSON object whose values are URLs, or one URL per line); files, globs, or directories (every
file below them with the format's extensions). The output parquet has the columns
url, caption, page_url, img_width, img_height, title; curate it with
  aligndata curate --input pairs.parquet --page-url-col page_url --extra-cols img_width,img_height,title ...
Counters (pages and <img> skipped by reason, damaged records) go to OUTPUT.report.json. A file that cannot be
read stops the run (exit 2) unless --skip-unreadable, which names it there instead; no pair at all exits 2
unless --allow-empty.
Any Apache Beam pipeline option may follow; the default runner is FnApiRunner.
"""


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    from aligndata.extract.pages import DEFAULT_MAX_PAGE_BYTES

    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="files, directories or globs; a directory means the files below it (recursively) with "
                             "the format's extensions, .gz included")
    parser.add_argument("--input-format", default="auto", choices=["auto", "html", "warc", "page-urls"],
                        help="auto: .warc/.arc[.gz] -> warc, .html/.htm[.gz] -> html")
    parser.add_argument("--output", required=True, metavar="PAIRS.parquet")
    parser.add_argument("--page-urls", default=None, metavar="FILE.json",
                        help="html: JSON object mapping file names (or paths) to the URLs the pages came from")
    parser.add_argument("--report", default=None, metavar="FILE.json",
                        help="extraction counters (default: OUTPUT with .parquet -> .report.json)")
    parser.add_argument("--max-page-bytes", type=_positive_int, default=DEFAULT_MAX_PAGE_BYTES,
                        help="pages (and WARC records) larger than this are skipped as page_too_large")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output and report")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="name files that cannot be read in the report and go on (default: such a file "
                             "stops the run)")
    parser.add_argument("--allow-empty", action="store_true",
                        help="exit 0 when the inputs give no pair at all (default: exit 2)")
    parser.add_argument("--quiet", action="store_true", help="print no summary")
    fetch = parser.add_argument_group("fetching pages (--input-format page-urls; the same options as curate)")
    for option in FETCH_OPTIONS:
        option.add_to(fetch)


def extract_config(args: argparse.Namespace):
    from aligndata.pipeline.extract_job import ExtractConfig

    return ExtractConfig(
        inputs=tuple(args.input), output=args.output, input_format=args.input_format, page_urls=args.page_urls,
        report=args.report, max_page_bytes=args.max_page_bytes, overwrite=args.overwrite,
        skip_unreadable=args.skip_unreadable, allow_empty=args.allow_empty,
        **{o.dest: getattr(args, o.dest) for o in FETCH_OPTIONS},
    )


def print_summary(report: dict, stream=None) -> None:
    stream = stream or sys.stderr
    ex = report["extraction"]
    print(f"{ex['records_read']} records/pages read, {ex['pages_parsed']} pages parsed, {ex['images_seen']} <img>, "
          f"{report['rows']} pairs -> {report['output']}", file=stream)
    for title, counts in (("pages skipped", ex["pages_skipped"]), ("<img> skipped", ex["images_skipped"]),
                          ("damage", ex["damage"])):
        for reason, n in counts.items():
            print(f"  {title + ':':15s} {reason:24s} {n:>9d}", file=stream)
    for unreadable in ex["unreadable_files"]:
        print(f"  unreadable: {unreadable['file']}: {unreadable['error']}", file=stream)


def cmd_extract(args, beam_args) -> int:
    from aligndata.pipeline.extract_job import run_extract

    cfg = extract_config(args)
    report = run_extract(cfg, beam_args)
    if not args.quiet:
        print_summary(report)
    if report["rows"] == 0 and not cfg.allow_empty:
        print(f"aligndata extract: error: the inputs gave no pairs at all (counters in {cfg.report_path}); "
              "pass --allow-empty if that is expected", file=sys.stderr)
        return 2
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract image/alt-text pairs from HTML files, WARC/ARC files or page URLs into a parquet table",
        epilog=EXTRACT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_extract_arguments(parser)
    from aligndata.pipeline.warm_workers import Warm

    parser.set_defaults(func=cmd_extract, warm=Warm(("aligndata.pipeline.extract_job",)))


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv, prefix=("extract",))

if __name__ == "__main__":
    sys.exit(main())

"""The `aligndata` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from aligndata import __version__
from aligndata.argtypes import non_negative_int as _non_negative_int
from aligndata.argtypes import positive_float as _positive_float
from aligndata.argtypes import positive_int as _positive_int

CURATE_EPILOG = """\
Any Apache Beam pipeline option may follow (--runner, --direct_running_mode multi_processing,
--direct_num_workers N, --temp_location, --project, --region, ...). The default runner is FnApiRunner.
"""


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_progress_arguments(group) -> None:
    group.add_argument("--quiet", action="store_true", help="no live progress and no summary")
    group.add_argument("--progress-json", action="store_true", help="live progress as JSON lines on stderr")
    group.add_argument("--progress-interval", type=_positive_float, default=5.0, metavar="SECONDS")


def progress_mode(args) -> str:
    return "off" if args.quiet else "json" if args.progress_json else "text"


def add_curate_arguments(parser: argparse.ArgumentParser) -> None:
    io_ = parser.add_argument_group("input and output")
    io_.add_argument("--input", nargs="+", required=True, metavar="PATH",
                     help="files, directories or globs (local, gs://, s3://, ...); .gz is read transparently. "
                          "A directory means its files with the format's extensions (web formats: recursively)")
    io_.add_argument("--output", required=True, metavar="DIR", help="directory for shards, ledger and report")
    io_.add_argument("--input-format", default="auto",
                     choices=["auto", "parquet", "csv", "tsv", "jsonl", "html", "warc", "page-urls"],
                     help="tables, or web sources whose <img alt> pairs are extracted (see docs/extraction.md); "
                          "page-urls: files listing page URLs, fetched like images")
    io_.add_argument("--page-urls", default=None, metavar="FILE.json", dest="page_urls_file",
                     help="html inputs: JSON mapping each file (name or path) to the URL it was fetched from")
    io_.add_argument("--max-page-bytes", type=_positive_int, default=10_000_000,
                     help="html/warc/page-urls: skip larger pages")
    io_.add_argument("--skip-unreadable", action="store_true",
                     help="html/warc/page-urls: name files that cannot be read in report.json and go on "
                          "(default: such a file stops the run)")
    io_.add_argument("--allow-empty", action="store_true",
                     help="exit 0 when the inputs hold no row at all (default: exit 2)")
    io_.add_argument("--url-col", default="url")
    io_.add_argument("--caption-col", default="caption")
    io_.add_argument("--extra-cols", type=_columns, default=(), metavar="A,B",
                     help="input columns copied into each sample's .json")
    io_.add_argument("--page-url-col", default=None, help="column holding the page the image was found on")
    io_.add_argument("--no-header", action="store_true",
                     help="csv/tsv without a header row; name columns by position (--url-col 1 --caption-col 0)")
    io_.add_argument("--dry-run", action="store_true",
                     help="no network: apply text and frequency rules, write candidates.parquet and report.json")
    io_.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in DIR")
    add_progress_arguments(io_)

    text = parser.add_argument_group("text rules (ALIGN)")
    text.add_argument("--min-words", type=_non_negative_int, default=3, help="keep captions with >= this many words")
    text.add_argument("--max-words", type=_positive_int, default=20, help="keep captions with <= this many words")
    text.add_argument("--vocab-size", type=_non_negative_int, default=100_000_000,
                      help="allowlist size: the most frequent unigrams+bigrams of the raw corpus")
    text.add_argument("--no-boilerplate", dest="boilerplate", action="store_false",
                      help="turn off the boilerplate rule (camera file names, resolutions, bare URLs, placeholders)")
    text.add_argument("--max-images-per-text", type=_positive_int, default=10,
                      help="drop a caption shared by more than this many image URLs")
    text.add_argument("--max-texts-per-image", type=_positive_int, default=1000,
                      help="drop an image URL with more than this many distinct captions")

    image = parser.add_argument_group("image rules (ALIGN) and output images")
    image.add_argument("--min-side", type=_non_negative_int, default=200,
                       help="keep images whose shorter side is > this (strict)")
    image.add_argument("--max-aspect-ratio", type=_positive_float, default=3.0,
                       help="keep images whose long/short ratio is < this (strict)")
    image.add_argument("--max-pixels", type=_positive_int, default=89_478_485, help="decompression-bomb limit")
    image.add_argument("--eval-index", default=None, metavar="INDEX",
                       help="drop near-duplicates of these eval images (built by aligndata eval-index build)")
    image.add_argument("--eval-hamming", type=_non_negative_int, default=6, metavar="T",
                       help="max pHash Hamming distance to an eval image or its mirror (default from docs/dedup.md)")
    image.add_argument("--nsfw", default="keywords", metavar="MODE",
                       help="off | keywords | nudenet | module:function (comma-separated to combine); ALIGN "
                            "removed pornographic images, so the default is keywords")
    image.add_argument("--nsfw-threshold", type=float, default=0.5, help="image scores >= this are NSFW")
    image.add_argument("--resize-mode", default="keep_ratio", choices=["keep_ratio", "center_crop", "border", "no"])
    image.add_argument("--resize-filter", default="area", choices=["area", "bilinear", "bicubic", "lanczos"],
                       help="resampling filter for downscaling (area = img2dataset's INTER_AREA, fastest)")
    image.add_argument("--image-size", type=_positive_int, default=346)
    image.add_argument("--encode-format", default="jpg", choices=["jpg", "webp", "png"])
    image.add_argument("--encode-quality", type=_positive_int, default=95)
    image.add_argument("--samples-per-shard", type=_positive_int, default=10_000,
                       help="target mean samples per shard (exact counts in sizes.json)")

    fetch = parser.add_argument_group("fetching")
    fetch.add_argument("--timeout", type=_positive_float, default=10.0, help="connect and read timeout, seconds")
    fetch.add_argument("--total-timeout", type=_positive_float, default=None,
                       help="wall-clock cap per download attempt, seconds (default 2*timeout+5)")
    fetch.add_argument("--max-download-bytes", type=_positive_int, default=20_000_000)
    fetch.add_argument("--retries", type=_non_negative_int, default=2)
    fetch.add_argument("--fetch-threads", type=_positive_int, default=32, help="concurrent downloads per worker")
    fetch.add_argument("--image-threads", type=_positive_int, default=None,
                       help="images decoded, checked and re-encoded at once per worker (default: its CPU count)")
    fetch.add_argument("--max-per-host", type=_positive_int, default=16,
                       help="concurrent requests to one host, per worker")
    fetch.add_argument("--host-rate", type=_positive_float, default=None, metavar="REQ_PER_S",
                       help="at most this many request starts per second to one host, per worker (default: no limit)")
    fetch.add_argument("--respect-robots-txt", action="store_true",
                       help="fetch each host's robots.txt once and skip what it disallows for 'aligndata'")
    fetch.add_argument("--robots-timeout", type=_positive_float, default=5.0)
    fetch.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="where downloads are cached so an interrupted run resumes (default OUTPUT/.fetch-cache)")
    fetch.add_argument("--keep-cache", action="store_true", help="keep the download cache after a successful run")
    fetch.add_argument("--allow-private-networks", action="store_true",
                       help="allow private, loopback and link-local addresses (local test servers)")
    fetch.add_argument("--user-agent", default=None, help="full User-Agent header (default names aligndata)")
    fetch.add_argument("--contact", default=None, help="a URL or e-mail added to the User-Agent for site owners")


def curate_config(args: argparse.Namespace):
    from aligndata.pipeline.config import CurateConfig

    if args.min_words > args.max_words:
        raise SystemExit(f"aligndata curate: --min-words ({args.min_words}) exceeds --max-words ({args.max_words})")
    return CurateConfig(
        inputs=tuple(args.input),
        output=args.output,
        input_format=args.input_format,
        url_col=args.url_col,
        caption_col=args.caption_col,
        extra_cols=args.extra_cols,
        page_url_col=args.page_url_col,
        no_header=args.no_header,
        page_urls_file=args.page_urls_file,
        max_page_bytes=args.max_page_bytes,
        skip_unreadable=args.skip_unreadable,
        allow_empty=args.allow_empty,
        min_words=args.min_words,
        max_words=args.max_words,
        vocab_size=args.vocab_size,
        max_images_per_text=args.max_images_per_text,
        max_texts_per_image=args.max_texts_per_image,
        boilerplate=args.boilerplate,
        min_side=args.min_side,
        max_aspect_ratio=args.max_aspect_ratio,
        max_pixels=args.max_pixels,
        eval_index=args.eval_index,
        eval_hamming=args.eval_hamming,
        nsfw=args.nsfw,
        nsfw_threshold=args.nsfw_threshold,
        resize_mode=args.resize_mode,
        resize_filter=args.resize_filter,
        image_size=args.image_size,
        encode_format=args.encode_format,
        encode_quality=args.encode_quality,
        samples_per_shard=args.samples_per_shard,
        timeout=args.timeout,
        total_timeout=args.total_timeout,
        max_download_bytes=args.max_download_bytes,
        retries=args.retries,
        fetch_threads=args.fetch_threads,
        image_threads=args.image_threads,
        cache_dir=args.cache_dir,
        max_per_host=args.max_per_host,
        host_rate=args.host_rate,
        respect_robots_txt=args.respect_robots_txt,
        robots_timeout=args.robots_timeout,
        keep_cache=args.keep_cache,
        allow_private_networks=args.allow_private_networks,
        user_agent=args.user_agent,
        contact=args.contact,
        dry_run=args.dry_run,
        overwrite=args.overwrite,
    )


def print_summary(report: dict, output: str, stream=None) -> None:
    stream = stream or sys.stderr
    kept_label = "candidates" if report["dry_run"] else "kept"
    print(f"{report['input_rows']} rows in, {report['kept']} {kept_label}, {report['rejected']} rejected",
          file=stream)
    for reason, n in report["rejected_by_reason"].items():
        if n:
            print(f"  {reason:32s} {n:>10d}  {report['rejected_pct_by_reason'][reason]:6.2f}%", file=stream)
    freq = report["frequency"]
    print(f"allowlist: {freq['allowlist_size']} of {freq['distinct_ngrams']} n-grams "
          f"(count >= {freq['allowlist_threshold']})", file=stream)
    if not report["dry_run"]:
        print(f"{report['shards']} shard(s) in {output}", file=stream)
    unreadable = (report.get("extraction") or {}).get("unreadable_files") or []
    if unreadable:
        names = ", ".join(u["file"] for u in unreadable[:5])
        more = f" and {len(unreadable) - 5} more (report.json lists them)" if len(unreadable) > 5 else ""
        print(f"{len(unreadable)} unreadable input file(s) skipped: {names}{more}", file=stream)


def cmd_curate(args, beam_args) -> int:
    from aligndata.pipeline.run import run_curate

    cfg = curate_config(args)
    report = run_curate(cfg, beam_args, progress_mode(args), args.progress_interval)
    if not args.quiet:
        print_summary(report, args.output)
    if not report["accounting_ok"]:
        print("aligndata curate: accounting mismatch (input rows != kept + rejected); this is a bug, please report it",
              file=sys.stderr)
        return 3
    if report["input_rows"] == 0 and not cfg.allow_empty:
        print(f"aligndata curate: error: the inputs hold no rows at all (see {args.output}/report.json); "
              "pass --allow-empty if that is expected", file=sys.stderr)
        return 2
    return 0


def cmd_example(args, beam_args) -> int:
    from aligndata.example import run_example

    report = run_example(args.output, overwrite=args.overwrite, beam_args=beam_args, progress=progress_mode(args),
                         progress_interval=args.progress_interval)
    if not args.quiet:
        print_summary(report, args.output)
    return 0 if report["accounting_ok"] else 3


def cmd_demo(args, beam_args) -> int:
    from aligndata.demo.run import DemoConfig, DemoError, print_results, run_demo

    cfg = DemoConfig(output=args.output, pairs=args.pairs, eval_size=args.eval_size, train_steps=args.train_steps,
                     batch_size=args.batch_size, compare=args.compare, seed=args.seed, overwrite=args.overwrite,
                     quiet=args.quiet)
    try:
        result = run_demo(cfg, beam_args)
    except DemoError as exc:
        print(f"aligndata demo: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print_results(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligndata", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aligndata {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's own progress too")
    sub = parser.add_subparsers(dest="command", required=True)

    curate = sub.add_parser(
        "curate",
        help="filter image/alt-text tables with ALIGN's rules into WebDataset shards",
        epilog=CURATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_curate_arguments(curate)
    curate.set_defaults(func=cmd_curate)

    example = sub.add_parser("example", help="curate a small bundled corpus served from a local HTTP server")
    example.add_argument("--output", default="example_output")
    example.add_argument("--overwrite", action="store_true")
    add_progress_arguments(example)
    example.set_defaults(func=cmd_example)

    demo = sub.add_parser("demo", help="the whole product on a synthetic noisy web: curate, train, evaluate")
    demo.add_argument("--output", default="demo_output")
    demo.add_argument("--pairs", type=_positive_int, default=2000, help="rows of the synthetic web")
    demo.add_argument("--eval-size", type=_positive_int, default=200, help="held-out evaluation images")
    demo.add_argument("--train-steps", type=_positive_int, default=2000)
    demo.add_argument("--batch-size", type=_positive_int, default=32)
    demo.add_argument("--compare", action="store_true", help="also train on the unfiltered corpus, same budget")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    # Each command family registers itself; their handlers import heavy modules lazily.
    from aligndata.commands.extract import register as register_extract
    from aligndata.commands.inspect import register as register_inspect
    from aligndata.commands.models import register as register_models
    from aligndata.commands.eval_index import register as register_eval_index

    register_eval_index(sub)
    register_extract(sub)
    register_inspect(sub)
    register_models(sub)
    return parser


def _quiet_import_noise(record: logging.LogRecord) -> bool:
    # Beam's GCP module warns at import on every machine without Google's client libraries.
    return "apitools not found" not in record.getMessage()


def _not_an_input_error(record: logging.LogRecord) -> bool:
    # A worker that finds an unreadable input raises InputError; Beam logs it with its traceback (or relays a
    # worker process's log of it) before the run fails, and main() prints its message once, on one line.
    from aligndata.io.inputs import InputError

    if record.exc_info and isinstance(record.exc_info[1], InputError):
        return False
    return not (record.name.startswith("apache_beam") and "InputError: " in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().addFilter(_quiet_import_noise)
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args:
        from aligndata.pipeline.run import unknown_beam_args

        unknown = unknown_beam_args(beam_args)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (not an aligndata or Apache Beam option)")
    # Importing Beam configures the root logger; take it back.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_an_input_error)
    from aligndata.io.inputs import InputError
    from aligndata.shards.writer import OutputDirNotEmpty

    try:
        return args.func(args, beam_args)
    except (InputError, OutputDirNotEmpty) as exc:
        print(f"aligndata {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aligndata: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

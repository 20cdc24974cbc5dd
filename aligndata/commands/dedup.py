"""The ``aligndata dedup`` sub-command: ``register(subparsers)`` adds it to the CLI."""

from __future__ import annotations

import argparse
import sys

from aligndata.commands import standalone_main
from aligndata.filters.options import positive_int

DEDUP_EPILOG = """\
SHARDS: a directory of shards, a glob, a {00000..00099}.tar pattern or a .tar path/URL, or several joined with
'::'. Only each shard's parquet is read (uid, sha256, phash, caption), never the tars.
Writes OUTPUT/part-*.parquet (uid, group, keep, kind: one row per sample in a group of two or more; exactly one
keep per group) and OUTPUT/summary.json. OUTPUT defaults to SHARDS_DIR/duplicates.
Groups: the same bytes (sha256), or pHashes within --hamming bits, transitively. Keep rule: the sample whose
caption (lowercased) is shared by the most members of its group; ties go to the smallest uid.
`aligndata subset --drop-duplicates` applies the groups. Any Apache Beam pipeline option may follow; the default
runner is FnApiRunner.
"""


def _hamming(text: str) -> int:
    from aligndata.filters.corpus_dedup import MAX_HAMMING

    value = int(text)
    if not 0 <= value <= MAX_HAMMING:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_HAMMING}, got {value}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def add_dedup_arguments(parser: argparse.ArgumentParser) -> None:
    from aligndata.commands.curate import add_progress_arguments
    from aligndata.filters.corpus_dedup import DEFAULT_CORPUS_HAMMING, DEFAULT_MAX_BAND_SIZE, DEFAULT_MAX_ROUNDS

    parser.add_argument("shards", metavar="SHARDS", help="the shards to deduplicate (see below)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="directory for the groups (default: SHARDS_DIR/duplicates)")
    parser.add_argument("--hamming", type=_hamming, default=DEFAULT_CORPUS_HAMMING, metavar="T",
                        help=f"near duplicates: pHashes within T bits (default {DEFAULT_CORPUS_HAMMING}; pHash "
                             "distances are even, so odd T equal T - 1)")
    parser.add_argument("--exact-only", action="store_true",
                        help="only identical bytes (sha256); no pHash comparison")
    parser.add_argument("--max-band-size", type=_at_least_two, default=DEFAULT_MAX_BAND_SIZE, metavar="N",
                        help="distinct pHashes one band bucket verifies; the rest are left out of that band and "
                             "counted in the summary (default %(default)s)")
    parser.add_argument("--max-rounds", type=positive_int, default=DEFAULT_MAX_ROUNDS, metavar="N",
                        help="rounds of label propagation for transitive groups (default %(default)s; the summary "
                             "says whether they sufficed)")
    parser.add_argument("--overwrite", action="store_true", help="replace duplicates written there before")
    add_progress_arguments(parser)


def print_summary(summary: dict, output: str, stream=None) -> None:
    stream = stream or sys.stderr
    kinds = summary["by_kind"]
    print(f"{summary['rows']:,} samples in {summary['shards']:,} shards: {summary['groups']:,} duplicate groups "
          f"({kinds['exact']['groups']:,} exact, {kinds['near']['groups']:,} near), "
          f"{summary['samples_in_groups']:,} samples in them, {summary['dropped']:,} to drop -> {output} "
          f"({summary['seconds']:.1f} s)", file=stream)


def warnings(summary: dict) -> list[str]:
    """What the user must know about this run's completeness: caps hit, propagation cut short."""
    out = []
    near = summary.get("near")
    if near and near["buckets_over_cap"]:
        out.append(f"{near['buckets_over_cap']:,} band bucket(s) held more than --max-band-size "
                   f"{summary['max_band_size']:,} distinct pHashes (largest {near['largest_bucket']:,}); "
                   f"{near['members_left_out']:,} were left out of those buckets' verification (their pairs "
                   "are still found through any other band they share)")
    if near and not near["propagation"]["converged"]:
        out.append(f"label propagation was still changing after --max-rounds {summary['max_rounds']} "
                   f"({near['propagation']['changed_per_round'][-1]:,} labels in the last round): some groups "
                   "may be split; run again with a larger --max-rounds")
    return out


def cmd_dedup(args, beam_args) -> int:
    from aligndata.commands.curate import progress_mode
    from aligndata.pipeline.dedup_job import DedupConfig
    from aligndata.pipeline.dedup_run import run_dedup

    cfg = DedupConfig(shards=args.shards, output=args.output, hamming=args.hamming, exact_only=args.exact_only,
                      max_band_size=args.max_band_size, max_rounds=args.max_rounds, overwrite=args.overwrite)
    summary = run_dedup(cfg, beam_args, progress=progress_mode(args), progress_interval=args.progress_interval)
    for line in warnings(summary):
        print(f"aligndata dedup: warning: {line}", file=sys.stderr)
    if not args.quiet:
        print_summary(summary, summary["output"])
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dedup", help="find exact and near duplicates inside a shard set (a Beam job); subset applies them",
        epilog=DEDUP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dedup_arguments(parser)
    from aligndata.pipeline.warm_workers import Warm

    parser.set_defaults(func=cmd_dedup, warm=Warm(("aligndata.pipeline.dedup_job",)))


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv, prefix=("dedup",))


if __name__ == "__main__":
    sys.exit(main())

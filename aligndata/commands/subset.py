"""``aligndata subset SHARDS --output NEW [filters]``: a new shard set of the samples every filter keeps.

Exit codes: 0 written; 1 written, but no sample was kept (NEW holds subset.json, an empty uids.npy and no
shard); 2 bad arguments or inputs (one line on stderr). Inputs are checked before NEW is touched, except a tar
found to disagree with its parquet while copying: that run stops without subset.json, which is written last.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from fractions import Fraction

from aligndata.commands import standalone_main
from aligndata.filters.options import int_within, positive_int
from aligndata.shards.names import MAX_SHARD_DIGITS

HELP = ("a new shard set of the samples that pass every filter (scores, --where on metadata, uid lists, "
        "duplicates), member bytes unchanged, plus the kept uids in DataComp's subset format (uids.npy)")
DUPLICATES_DIR = "duplicates"  # aligndata dedup's listing beside the (first) source shards: SHARDS_DIR/duplicates
_DEFAULT_DUPLICATES = object()  # --drop-duplicates given without a PATH


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("must be a number, got nan")
    return value


def exact_fraction(text: str) -> str:
    """Kept as typed, so the count k = floor(F * N) is computed exactly (Fraction("0.29") is 29/100)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.3 or 1/3, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return text.strip()


def cmd_subset(args, beam_args) -> int:
    from aligndata.io.storage import StorageError
    from aligndata.shards.spec import ShardSetError, resolve
    from aligndata.shards.writer import OutputDirNotEmpty
    from aligndata.subsets import SubsetError
    from aligndata.subsets.run import SUBSET_JSON, UIDS_NPY, run_subset
    from aligndata.subsets.select import Request, input_digits

    if beam_args:
        raise SubsetError(f"unrecognized arguments: {' '.join(beam_args)}")
    try:
        shards = resolve(args.shards)
        duplicates = args.drop_duplicates
        if duplicates is _DEFAULT_DUPLICATES:
            duplicates = shards.join(shards.parent(shards.paths[0]), DUPLICATES_DIR)
        request = Request(spec=args.shards, paths=tuple(shards.paths), output=args.output, scores_dir=args.scores,
                          min_score=args.min_score, top_fraction=args.top_fraction, where=args.where,
                          uids=args.uids, duplicates=duplicates, samples_per_shard=args.samples_per_shard,
                          shard_digits=args.shard_digits or input_digits(shards))
        summary = run_subset(request, processes=args.processes, overwrite=args.overwrite, quiet=args.quiet)
    except (ShardSetError, StorageError, OutputDirNotEmpty) as err:
        raise SubsetError(str(err)) from None
    except OSError as err:  # e.g. no permission to write NEW
        raise SubsetError(f"{err}") from None
    storage = shards.storage(args.output)
    if not args.quiet:
        print(format_summary(summary, args.output))
    if not summary["kept"]:
        print(f"aligndata subset: no sample passed every filter; the counts are in "
              f"{storage.join(args.output, SUBSET_JSON)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"kept uids (DataComp's subset format): {storage.join(args.output, UIDS_NPY)}")
    return 0


def format_summary(summary: dict, output: str) -> str:
    total, kept = summary["input"]["samples"], summary["kept"]
    share = f" ({100 * kept / total:.1f}%)" if total else ""
    lines = [f"{total} samples in {summary['input']['shards']} shard(s) -> kept {kept}{share} in "
             f"{summary['output']['shards']} shard(s) in {output}"]
    for row in summary["filters"]:
        lines.append(f"  {row['filter']:<16} passed {row['passed']:>10}   left after it {row['left']:>10}")
    unscored = summary.get("scores", {}).get("unscored")
    if unscored:
        lines.append(f"  unscored (null score: aligndata score could not read the image or caption): {unscored}, "
                     f"never kept by a score filter")
    if "top_fraction" in summary:
        top = summary["top_fraction"]
        lowest = f", lowest score kept {top['lowest_score_kept']:.6g}" if "lowest_score_kept" in top else ""
        lines.append(f"  top fraction {top['fraction']}: {top['k']} of {top['of']}{lowest}")
    if summary["uids"]["repeated"]:
        lines.append(f"  note: {summary['uids']['repeated']} kept samples repeat a uid kept already (uids.npy "
                     f"holds each uid once)")
    return "\n".join(lines)


def register(subparsers) -> None:
    parser = subparsers.add_parser("subset", help=HELP, description=HELP + ".\n\n" + __doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", metavar="SHARDS",
                        help="the source shards: a directory, a glob, a {00000..00009}.tar pattern or a URL "
                             "(each tar with its NAME.parquet beside it)")
    parser.add_argument("--output", required=True, metavar="NEW", help="the new shard directory")
    by_score = parser.add_mutually_exclusive_group()
    by_score.add_argument("--min-score", type=_score, metavar="X", help="keep samples whose score is >= X")
    by_score.add_argument("--top-fraction", type=exact_fraction, metavar="F",
                          help="keep exactly floor(F*N) of the N scored samples: the highest scores, ties by the "
                               "smaller uid; ranked over the whole set, before the other filters (a null score, "
                               "unscored, is never kept)")
    parser.add_argument("--scores", metavar="DIR",
                        help="where the NAME_scores.parquet files (uid, score, model) are (default: beside each "
                             "shard)")
    parser.add_argument("--where", metavar="EXPR",
                        help="a condition on the metadata columns, e.g. 'language == \"en\" and width >= 256' "
                             "(comparisons, in [...], is None, and/or/not, + - * /; nothing else)")
    parser.add_argument("--uids", metavar="FILE",
                        help="keep only these uids: DataComp's .npy (u8,u8 pairs, or its raw memmap), a parquet "
                             "with a uid column, or text with one uid a line")
    parser.add_argument("--drop-duplicates", nargs="?", const=_DEFAULT_DUPLICATES, metavar="PATH",
                        help="drop the uids aligndata dedup marked keep=false (PATH: its listing, a directory "
                             "of part-*.parquet; default SHARDS_DIR/duplicates)")
    parser.add_argument("--samples-per-shard", type=positive_int, default=10_000, metavar="N",
                        help="samples a new shard, in input order (default 10000: curate's default and "
                             "DataComp's resharder's)")
    parser.add_argument("--shard-digits", type=int_within(1, MAX_SHARD_DIGITS), metavar="N",
                        help="digits of the new shards' zero-padded names (default: the source shards', e.g. 8 for "
                             "DataComp's 00000000.tar, else 5)")
    parser.add_argument("--processes", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes (default: the CPU count); the output bytes do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files aligndata wrote in NEW before (others stay)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(func=cmd_subset)


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv, prefix=("subset",))


if __name__ == "__main__":
    sys.exit(main())

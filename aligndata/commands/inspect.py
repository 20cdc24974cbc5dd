"""Command line for `aligndata inspect ...` and `aligndata report DIR`.

Exit codes: 0 success (validate: no problems; grep: at least one match); 1 a finding (validate problems, no
grep match, key/index not found, a sample that cannot be exported); 2 bad arguments or unreadable input
(SHARDS matches nothing, an invalid regex, an output path that is a directory, a report directory without
report.json).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys

from aligndata.commands import standalone_main
from aligndata.filters.options import non_negative_int as _non_negative
from aligndata.filters.options import positive_int as _positive

HELP = "look inside, check and export WebDataset shards (SHARDS: a directory, glob, {00000..00099} pattern or URL)"
SHARDS_HELP = "a directory of .tar shards, a glob, a brace pattern such as 'shards/{00000..00099}.tar', or a URL"


class UsageError(Exception):
    """Bad arguments: exit code 2."""


def _handler(func):
    """Turn the errors users cause into one-line messages and exit codes instead of tracebacks."""

    @functools.wraps(func)
    def run(args, beam_args=None) -> int:
        from aligndata.inspect.export import ExportError
        from aligndata.shards.spec import ShardSetError
        from aligndata.inspect.show import NotFound
        from aligndata.io.storage import StorageError

        prog = f"aligndata {args.command}" + (f" {args.inspect_command}" if getattr(args, "inspect_command", None)
                                               else "")
        try:
            if beam_args:
                raise UsageError(f"unrecognized arguments: {' '.join(beam_args)}")
            return func(args)
        except (UsageError, ShardSetError, StorageError) as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        except (NotFound, ExportError) as err:
            print(f"{prog}: {err}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # `... | head`: the reader left; not an error
            sys.stderr.close()
            return 0
        except OSError as err:  # e.g. an output path in a missing directory, or no permission
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2

    return run


def _shards(args):
    from aligndata.shards.spec import resolve

    return resolve(args.shards)


# ------------------------------------------------------------------------------------------------ handlers


@_handler
def cmd_summary(args) -> int:
    from aligndata.inspect.summary import format_summary, summarize, to_json

    result = summarize(_shards(args), force_scan=args.scan)
    print(to_json(result) if args.json else format_summary(result))
    return 0


@_handler
def cmd_show(args) -> int:
    from aligndata.inspect.show import find_by_index, find_by_key, format_sample

    if (args.key is None) == (args.index is None):
        raise UsageError("give either KEY or --index N")
    if args.save_image and os.path.isdir(args.save_image):
        raise UsageError(f"--save-image {args.save_image} is a directory; give a file name")
    shards = _shards(args)
    sample = find_by_key(shards, args.key) if args.key is not None else find_by_index(shards, args.index)
    print(format_sample(sample))
    if args.save_image:
        if sample.image is None:
            print(f"sample {sample.key} has no image; nothing saved", file=sys.stderr)
            return 1
        with open(args.save_image, "wb") as f:  # exactly the path the user named, nothing else
            f.write(sample.image)
        print(f"image saved to {args.save_image}", file=sys.stderr)
    return 0


@_handler
def cmd_head(args) -> int:
    from aligndata.inspect.show import head, head_line

    for sample in head(_shards(args), args.n):
        print(head_line(sample))
    return 0


@_handler
def cmd_grep(args) -> int:
    from aligndata.inspect.show import grep, printable

    try:
        pattern = re.compile(args.regex, re.IGNORECASE if args.ignore_case else 0)
    except re.error as err:
        raise UsageError(f"invalid regular expression {args.regex!r}: {err}") from None
    found = 0
    for shard, key, caption in grep(_shards(args), pattern, force_scan=args.scan):
        print(f"{printable(shard)}\t{printable(key)}\t{printable(caption)}")
        found += 1
        if args.max_count and found >= args.max_count:
            break
    return 0 if found else 1


@_handler
def cmd_validate(args) -> int:
    from aligndata.inspect.validate import small_shards, validate

    problems, totals = validate(_shards(args), deep=args.deep)
    warnings = small_shards(totals.pop("per_shard"), args.min_samples) if args.min_samples else []
    if args.json:
        print(json.dumps({**totals, "problems": [p.as_dict() for p in problems], "warnings": warnings}, indent=2,
                         ensure_ascii=False))
    else:
        for problem in problems:
            print(problem.line())
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    verdict = "ok" if not problems else f"{len(problems)} problem(s) in " \
        f"{len({p.shard for p in problems})} shard(s)"
    decoded = " (images decoded)" if args.deep else ""
    print(f"{totals['shards']} shard(s), {totals['samples']} sample(s) checked{decoded}: {verdict}", file=sys.stderr)
    return 0 if not problems else 1


@_handler
def cmd_grid(args) -> int:
    from aligndata.inspect.grid import grid_png
    from aligndata.io.storage import storage_for

    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory; give a .png file name")
    png = grid_png(_shards(args), args.n, args.seed, thumb=args.thumb)
    with storage_for(args.out).open_write(args.out) as f:
        f.write(png)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


@_handler
def cmd_export(args) -> int:
    from aligndata.inspect.export import check_output, export

    shards = _shards(args)
    try:
        check_output(shards, args.out)
    except ValueError as err:
        raise UsageError(str(err)) from None
    rows = export(shards, args.format, args.out, with_images=args.with_images)
    print(f"wrote {rows} row(s) to {args.out}", file=sys.stderr)
    return 0


@_handler
def cmd_report(args) -> int:
    from aligndata.inspect.report_page import ReportInputError, write_report_html

    try:
        path = write_report_html(args.dir)
    except ReportInputError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {path}", file=sys.stderr)
    return 0


@_handler
def cmd_rejected(args) -> int:
    """The rejected ledger (DIR/rejected/part-*.parquet) as one file, or its rows as JSON lines on stdout."""
    from aligndata.inspect import ledger
    from aligndata.shards.contract import CANDIDATES, REJECTED

    name = CANDIDATES if args.candidates else REJECTED
    if not ledger.ledger_parts(args.dir, name):
        raise UsageError(f"{args.dir} holds no {name} ledger ({name}/part-*.parquet)")
    if args.output:
        if os.path.isdir(args.output):
            raise UsageError(f"--output {args.output} is a directory; give a file name")
        rows = ledger.write_one_file(args.dir, name, args.output)
        print(f"wrote {rows} rows to {args.output}", file=sys.stderr)
        return 0
    shown = 0
    for batch in ledger.iter_batches(args.dir, name):
        for row in batch.to_pylist():
            if args.reason and row.get("reason") != args.reason:
                continue
            if args.limit is not None and shown >= args.limit:
                return 0
            print(json.dumps(row, ensure_ascii=False))
            shown += 1
    return 0


# ------------------------------------------------------------------------------------------------ parser


def register(subparsers) -> None:
    """Add `inspect` (with its sub-commands) and `report` to the `aligndata` parser."""
    inspect = subparsers.add_parser("inspect", help=HELP, description=HELP + ".\n\n" + __doc__.split("\n\n", 1)[1],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = inspect.add_subparsers(dest="inspect_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str, func):
        parser = sub.add_parser(name, help=help_, description=help_)
        parser.add_argument("shards", metavar="SHARDS", help=SHARDS_HELP)
        parser.set_defaults(func=func)
        return parser

    p = add("summary", "counts, bytes, image size / aspect / caption distributions, top domains and words",
            cmd_summary)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--scan", action="store_true", help="read the tars even where per-shard parquet files exist")

    p = add("show", "one sample: caption, metadata, image details", cmd_show)
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("--index", type=_non_negative, metavar="N", help="the N-th sample (0-based) over all shards")
    p.add_argument("--save-image", metavar="PATH", help="write the sample's image bytes to PATH")

    p = add("head", "the first samples: shard, key, size, caption", cmd_head)
    p.add_argument("-n", type=_non_negative, default=10, metavar="N", help="how many (default 10)")

    p = add("grep", "samples whose caption matches a regular expression (exit 1 when none)", cmd_grep)
    p.add_argument("regex", metavar="REGEX", help="Python regular expression, searched anywhere in the caption")
    p.add_argument("-i", "--ignore-case", action="store_true")
    p.add_argument("-m", "--max-count", type=_positive, metavar="N", help="stop after N matches")
    p.add_argument("--scan", action="store_true", help="read the tars even where per-shard parquet files exist")

    p = add("validate", "check the shards against the output contract (exit 1 and a list when not clean)",
            cmd_validate)
    p.add_argument("--deep", action="store_true", help="also decode every image")
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.add_argument("--min-samples", type=_positive, metavar="N",
                   help="warn about shards with fewer samples (open_clip: batch size x workers; a warning, exit 0)")

    p = add("grid", "a PNG contact sheet of random samples with wrapped captions", cmd_grid)
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("-n", type=_positive, default=64, metavar="N", help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the choice of samples (default 0)")
    p.add_argument("--thumb", type=_positive, default=160, metavar="PX", help="thumbnail size (default 160)")

    p = add("export", "all samples as one parquet or JSON-lines file", cmd_export)
    p.add_argument("--format", required=True, choices=["parquet", "jsonl"])
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--with-images", action="store_true", help="include the image bytes (base64 in jsonl)")

    p = sub.add_parser("rejected", help="a curate output's rejected ledger (DIR/rejected/part-*.parquet): its rows "
                                        "as JSON lines, or --output one parquet file",
                       description="The rejected ledger is written in parts by many workers; this reads them in "
                                   "order (pyarrow users: pyarrow.dataset.dataset('DIR/rejected')).")
    p.add_argument("dir", metavar="DIR", help="a curate output directory")
    p.add_argument("--output", metavar="FILE.parquet", help="write every row into one parquet file")
    p.add_argument("--reason", metavar="CODE", help="only rows rejected for this reason (see aligndata rules)")
    p.add_argument("--limit", type=_non_negative, metavar="N", help="print at most N rows")
    p.add_argument("--candidates", action="store_true", help="the --dry-run candidates ledger instead")
    p.set_defaults(func=cmd_rejected)

    report = subparsers.add_parser("report", help="(re)make report.html in a curate output directory",
                                   description="(Re)make DIR/report.html from report.json, the rejected ledger and "
                                               "the shards: one self-contained file that opens offline.")
    report.add_argument("dir", metavar="DIR")
    report.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv)

if __name__ == "__main__":
    sys.exit(main())

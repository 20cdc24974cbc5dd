"""The ``aligndata curate`` sub-command: its options come from the declarations (rule registry, fetch options,
output-image options, run options in pipeline/config.py), so a new rule's option appears here by itself."""

from __future__ import annotations

import argparse
import sys

from aligndata.filters.options import positive_float

CURATE_EPILOG = """\
Any Apache Beam pipeline option may follow (--runner, --direct_running_mode multi_processing,
--direct_num_workers N, --temp_location, --project, --region, ...). The default runner is FnApiRunner.
Rules, their paper wording, options and reason codes: aligndata rules.
"""


def add_progress_arguments(group) -> None:
    group.add_argument("--quiet", action="store_true", help="no live progress and no summary")
    group.add_argument("--progress-json", action="store_true", help="live progress as JSON lines on stderr")
    group.add_argument("--progress-interval", type=positive_float, default=5.0, metavar="SECONDS")


def progress_mode(args) -> str:
    return "off" if args.quiet else "json" if args.progress_json else "text"


def add_curate_arguments(parser: argparse.ArgumentParser) -> None:
    from aligndata.fetch.options import FETCH_OPTIONS, IMAGE_FETCH_OPTIONS
    from aligndata.filters import registry
    from aligndata.images.process import OUTPUT_IMAGE_OPTIONS
    from aligndata.pipeline.config import INPUT_OPTIONS, RESUME_OPTIONS, SHARD_OPTIONS

    io_ = parser.add_argument_group("input and output")
    io_.add_argument("--input", nargs="+", required=True, metavar="PATH",
                     help="files, directories or globs (local, gs://, s3://, ...); .gz is read transparently. "
                          "A directory means its files with the format's extensions (web formats: recursively)")
    io_.add_argument("--output", required=True, metavar="DIR", help="directory for shards, ledger and report")
    for option in INPUT_OPTIONS:
        option.add_to(io_)
    add_progress_arguments(io_)

    groups = {registry.CAPTION: parser.add_argument_group("text rules (ALIGN; see aligndata rules)"),
              registry.IMAGE_URL: parser.add_argument_group("image rules (ALIGN; see aligndata rules)")}
    for rule in registry.RULES:
        for option in rule.options:
            option.add_to(groups[rule.judges])
            if option.action == "store_false":  # a preset may turn the rule off; this turns it back on
                groups[rule.judges].add_argument(f"--{option.dest.replace('_', '-')}", dest=option.dest,
                                                 action="store_true", help=f"undo {option.flag} (e.g. a preset's)")

    images = parser.add_argument_group("output images and shards")
    for option in OUTPUT_IMAGE_OPTIONS + SHARD_OPTIONS:
        option.add_to(images)

    fetch = parser.add_argument_group("fetching")
    for option in FETCH_OPTIONS + IMAGE_FETCH_OPTIONS + RESUME_OPTIONS:
        option.add_to(fetch)


class _Default:
    """An option's default as argparse leaves it when the option is not given, so that a preset can tell it
    from a value the user typed (which always wins)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _mark_defaults(parser: argparse.ArgumentParser, dests: set[str]) -> None:
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.dest in dests:
            action.default = _Default(action.default)


def curate_config(args: argparse.Namespace):
    from aligndata.filters import presets
    from aligndata.pipeline.config import CURATE_OPTIONS, CurateConfig

    preset = presets.get(args.preset).values() if args.preset else {}

    def value(dest):
        given = getattr(args, dest)
        return preset.get(dest, given.value) if isinstance(given, _Default) else given

    values = {o.dest: value(o.dest) for o in CURATE_OPTIONS}
    if values["min_words"] > values["max_words"]:
        raise SystemExit(f"aligndata curate: --min-words ({values['min_words']}) exceeds --max-words "
                         f"({values['max_words']})")
    return CurateConfig(inputs=tuple(args.input), output=args.output, **values)


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
        if cfg.preset:
            from aligndata.filters import presets

            steps = presets.next_steps(presets.get(cfg.preset), args.output)
            if steps:
                print(f"preset {cfg.preset}: the recipe goes on outside curate:", *steps, sep="\n  ", file=sys.stderr)
    if not report["accounting_ok"]:
        print("aligndata curate: accounting mismatch (input rows != kept + rejected); this is a bug, please report it",
              file=sys.stderr)
        return 3
    if report["input_rows"] == 0 and not cfg.allow_empty:
        print(f"aligndata curate: error: the inputs hold no rows at all (see {args.output}/report.json); "
              "pass --allow-empty if that is expected", file=sys.stderr)
        return 2
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="filter image/alt-text tables with ALIGN's rules into WebDataset shards",
        epilog=CURATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_curate_arguments(parser)
    from aligndata.filters import presets

    _mark_defaults(parser, {s.dest for p in presets.PRESETS.values() for s in p.settings})
    from aligndata.pipeline.warm_workers import CURATE

    parser.set_defaults(func=cmd_curate, warm=CURATE)

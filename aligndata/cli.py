"""The `aligndata` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from aligndata import LOG_FORMAT, __version__, gc_policy
from aligndata.commands.curate import add_progress_arguments, print_summary, progress_mode
from aligndata.commands.curate import register as register_curate
from aligndata.commands.subset import exact_fraction
from aligndata.filters.options import positive_int as _positive_int
from aligndata.pipeline import warm_workers


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
                     batch_size=args.batch_size, compare=args.compare, loop=args.loop, keep_fraction=args.keep_fraction,
                     unicl=args.unicl, label_images=args.label_images,
                     seed=args.seed, overwrite=args.overwrite, quiet=args.quiet)
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

    register_curate(sub)

    example = sub.add_parser("example", help="curate a small bundled corpus served from a local HTTP server")
    example.add_argument("--output", default="example_output")
    example.add_argument("--overwrite", action="store_true")
    add_progress_arguments(example)
    example.set_defaults(func=cmd_example, warm=warm_workers.CURATE)

    demo = sub.add_parser("demo", help="the whole product on a synthetic noisy web: curate, train, evaluate")
    demo.add_argument("--output", default="demo_output")
    demo.add_argument("--pairs", type=_positive_int, default=2000, help="rows of the synthetic web")
    demo.add_argument("--eval-size", type=_positive_int, default=200, help="held-out evaluation images")
    demo.add_argument("--train-steps", type=_positive_int, default=2000)
    demo.add_argument("--batch-size", type=_positive_int, default=32)
    demo.add_argument("--compare", action="store_true", help="also train on the unfiltered corpus, same budget")
    demo.add_argument("--loop", action="store_true",
                      help="the closed loop (implies --compare): the curated run's model scores both corpora, and two "
                           "more runs train on their top fraction by score (score only, rules + score)")
    demo.add_argument("--keep-fraction", type=exact_fraction, default=None, metavar="F",
                      help="--loop's top fraction of each corpus (0.3, 1/3; default: the share of the unfiltered "
                           "corpus the rules kept, so score only and rules only train on as many samples)")
    demo.add_argument("--unicl", action="store_true",
                      help="three runs, same steps: ALIGN on the curated shards, UniCL on them + an image-label set of "
                           "other scenes (1:1 per batch), UniCL on the image-label set alone")
    demo.add_argument("--label-images", type=_positive_int, default=1200, help="--unicl's image-label set size")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    # Each command family registers itself; their handlers import heavy modules lazily.
    from aligndata.commands.extract import register as register_extract
    from aligndata.commands.inspect import register as register_inspect
    from aligndata.commands.models import register as register_models
    from aligndata.commands.dedup import register as register_dedup
    from aligndata.commands.eval_index import register as register_eval_index
    from aligndata.commands.labels import register as register_labels

    from aligndata.commands.rules import register as register_rules
    from aligndata.commands.score import register as register_score
    from aligndata.commands.subset import register as register_subset

    register_eval_index(sub)
    register_extract(sub)
    register_rules(sub)
    register_inspect(sub)
    register_models(sub)
    register_subset(sub)
    register_score(sub)
    register_dedup(sub)
    register_labels(sub)
    return parser


_BEAM_NOISE = (
    "apitools not found",  # Beam's GCP module, at import, on every machine without Google's client libraries
    "No semi_persistent_directory found",  # every local worker, relayed by the runner: nothing to act on
)


def _quiet_beam_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(noise in message for noise in _BEAM_NOISE)


def _not_an_input_error(record: logging.LogRecord) -> bool:
    # A worker that finds an unreadable input raises InputError; Beam logs it with its traceback (or relays a
    # worker process's log of it) before the run fails, and main() prints its message once, on one line.
    from aligndata.io.inputs import InputError

    if record.exc_info and isinstance(record.exc_info[1], InputError):
        return False
    return not (record.name.startswith("apache_beam") and "InputError: " in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None: the process's own arguments) or one command in a running process."""
    program = argv is None
    if program:
        gc_policy.pause()  # until the command's work begins: a pipeline's construction, or at once (gc_policy.py)
    logging.getLogger().addFilter(_quiet_beam_noise)
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    warm = getattr(args, "warm", None)  # set by the commands that run a Beam pipeline
    if warm is None:
        gc_policy.resume()
    try:
        # multi_processing workers start now and import while this process builds the pipeline (warm_workers.py)
        with warm_workers.started(beam_args, warm):
            return _run(parser, args, beam_args)
    finally:
        if program:
            gc_policy.before_exit()


def _run(parser, args, beam_args) -> int:
    if beam_args:
        from aligndata.pipeline.run import unknown_beam_args

        unknown = unknown_beam_args(beam_args)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (not an aligndata or Apache Beam option)")
    # Importing Beam configures the root logger; take it back.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=LOG_FORMAT,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_beam_noise)  # records of Beam's loggers too (a logger's filter sees only its own)
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

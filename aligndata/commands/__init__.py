"""The command families of the `aligndata` CLI. Each module registers its sub-commands; handlers import heavy
modules (Beam, torch) lazily. The top layer: it may import every package below it."""

from __future__ import annotations

import argparse
import logging
import sys

from aligndata import LOG_FORMAT


def standalone_main(register, argv: list[str] | None = None, prefix: tuple[str, ...] = ()) -> int:
    """``python -m aligndata.commands.X ...``: one command family without the rest of the CLI (``prefix`` names
    the sub-command when the family has only one). Input errors are one line on stderr and exit 2."""
    from aligndata.io.inputs import InputError

    parser = argparse.ArgumentParser(prog="aligndata")
    register(parser.add_subparsers(dest="command", required=True))
    args, beam_args = parser.parse_known_args([*prefix, *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        return args.func(args, beam_args)
    except InputError as exc:
        print(f"aligndata {args.command}: error: {exc}", file=sys.stderr)
        return 2

"""`aligndata eval-index build|info|query`: make and inspect the eval-set index used by `curate --eval-index`.

    aligndata eval-index build --images coco/val2017 --images 'flickr30k/*.jpg' --output eval.npz
    aligndata eval-index info eval.npz
    aligndata eval-index query eval.npz photo.jpg --eval-hamming 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from aligndata.commands import standalone_main
from aligndata.filters.dedup import DEFAULT_EVAL_HAMMING, HASH_KINDS, HashSpec
from aligndata.filters.image import DecodeError, decode_image
from aligndata.images.eval_index import EvalIndexError, build_index, load_index, read_index

_SHOW_SKIPPED = 10


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval-index", help="build or inspect the eval-set near-duplicate index",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="eval_command", required=True)

    build = sub.add_parser("build", help="hash eval images (and their mirrors) into an index file")
    build.add_argument("--images", action="append", required=True, metavar="DIR|GLOB|SHARDS",
                       help="a directory (recursive), a quoted glob, an image file or .tar shards; repeatable")
    build.add_argument("--output", required=True, metavar="INDEX", help="index file to write (.npz)")
    build.add_argument("--hash", dest="hash_kind", default="phash", choices=HASH_KINDS,
                       help="perceptual hash (phash is what curate computes anyway; others are hashed again)")
    build.add_argument("--hash-size", type=int, default=8, help="hash side; bits = size * size (default 8: 64 bits)")
    build.add_argument("--id-prefix", default="", help="prefix for every id, e.g. coco/ (keeps sources apart)")
    build.add_argument("--workers", type=int, default=None, help="processes hashing images (default: all cores)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing index file")
    build.set_defaults(func=cmd_build)

    info = sub.add_parser("info", help="print an index file's metadata as JSON")
    info.add_argument("index", metavar="INDEX")
    info.set_defaults(func=cmd_info)

    query = sub.add_parser("query", help="look images up in an index: nearest eval image within the distance")
    query.add_argument("index", metavar="INDEX")
    query.add_argument("images", nargs="+", metavar="IMAGE")
    query.add_argument("--eval-hamming", type=_non_negative_int, default=DEFAULT_EVAL_HAMMING, metavar="T")
    query.set_defaults(func=cmd_query)


def _fail(message: str) -> int:
    print(f"aligndata eval-index: error: {message}", file=sys.stderr)
    return 2


def cmd_build(args, beam_args=()) -> int:
    if os.path.exists(args.output) and not args.overwrite:
        return _fail(f"{args.output} exists; pass --overwrite to replace it")
    try:
        spec = HashSpec(args.hash_kind, args.hash_size)
    except ValueError as err:
        return _fail(f"--hash {args.hash_kind} --hash-size {args.hash_size}: {err}")
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        result = build_index(args.images, args.output, spec, args.id_prefix, args.workers)
    except EvalIndexError as err:
        return _fail(str(err))
    print(f"{result.count} eval images ({spec.kind}, {spec.bits} bits, + mirrors) -> {result.path} "
          f"({result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s)", file=sys.stderr)
    if result.skipped:
        print(f"{len(result.skipped)} file(s) skipped (not decodable images):", file=sys.stderr)
        for where, why in list(result.skipped.items())[:_SHOW_SKIPPED]:
            print(f"  {where}: {why}", file=sys.stderr)
        if len(result.skipped) > _SHOW_SKIPPED:
            print(f"  ... and {len(result.skipped) - _SHOW_SKIPPED} more", file=sys.stderr)
    return 0


def cmd_info(args, beam_args=()) -> int:
    try:
        meta, arrays = read_index(args.index)
    except EvalIndexError as err:
        return _fail(str(err))
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def cmd_query(args, beam_args=()) -> int:
    try:
        index = load_index(args.index, args.eval_hamming)
    except EvalIndexError as err:
        return _fail(str(err))
    status = 0
    for path in args.images:
        try:
            image = decode_image(Path(path).read_bytes()).image
        except (OSError, DecodeError) as err:
            print(f"{path}\terror\t{getattr(err, 'detail', err)}")
            status = 1
            continue
        match = index.match(index.spec.hash_image(image))
        print(f"{path}\t{'duplicate' if match else 'unique'}\t{match.detail() if match else ''}".rstrip("\t"))
    return status


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv)

if __name__ == "__main__":
    sys.exit(main())

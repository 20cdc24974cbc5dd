"""The ``aligndata shards-from-labels`` sub-command: an ImageFolder tree or a CSV of path,label into shards with
``.cls`` and classnames.txt, for UniCL (``register(subparsers)`` adds it to the CLI)."""

from __future__ import annotations

import sys

from aligndata.commands import standalone_main
from aligndata.filters.options import non_negative_int, positive_float, positive_int
from aligndata.images.process import OUTPUT_IMAGE_OPTIONS, ImageConfig
from aligndata.shards.names import DEFAULT_SHARD_DIGITS, MAX_SHARD_DIGITS

EPILOG = """\
--images ROOT: torchvision's ImageFolder layout, ROOT/CLASS/**/*.jpg (class ids in sorted name order).
--csv FILE: a header with 'path' and 'label' (other columns go into each sample's .json); relative paths are
relative to --root (default: the CSV's folder). Class ids: the sorted distinct labels.
Writes OUTPUT/00000.tar ... (KEY.jpg, KEY.cls, KEY.json, KEY.txt = the class name; KEY = sha256(path TAB
label)[:32]), NAME.parquet, NAME_stats.json, sizes.json, classnames.txt (line i = class i), rejected/ (every
file that did not become a sample, with its reason), report.json and config.json. Images go through curate's
decoder (pixel-bomb limit, EXIF orientation, modes) and resizer; its size rules are off unless --min-side /
--max-aspect-ratio are given. Deterministic: the same files and options give byte-identical shards.
`aligndata train --data OUTPUT` reads OUTPUT/classnames.txt and trains each sample on a prompt of its class.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("shards-from-labels", help="image-label data (ImageFolder or CSV) -> shards with .cls",
                              epilog=EPILOG, formatter_class=_raw())
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="ROOT", help="ImageFolder root: ROOT/CLASS/*.jpg")
    source.add_argument("--csv", metavar="FILE", help="CSV with path,label columns")
    p.add_argument("--root", default=None, help="--csv's relative paths are relative to this (default: its folder)")
    p.add_argument("--output", required=True)
    p.add_argument("--samples-per-shard", type=positive_int, default=10_000)
    p.add_argument("--shard-digits", type=_digits, default=DEFAULT_SHARD_DIGITS,
                   help="shard names' zero-padded width (5: 00000.tar; 8: DataComp's 00000000.tar)")
    p.add_argument("--processes", type=positive_int, default=1, help="decode/resize processes (output identical)")
    p.add_argument("--max-file-bytes", type=positive_int, default=64 << 20, help="larger files are rejected unread")
    p.add_argument("--max-pixels", type=positive_int, default=ImageConfig.max_pixels,
                   help="decompression-bomb limit (curate's)")
    p.add_argument("--min-side", type=non_negative_int, default=0, help="reject images whose shorter side is <= this (0: off)")
    p.add_argument("--max-aspect-ratio", type=positive_float, default=None,
                   help="reject images whose long/short ratio is >= this (default: off)")
    for option in OUTPUT_IMAGE_OPTIONS:
        option.add_to(p)
    p.add_argument("--overwrite", action="store_true", help="replace the files aligndata wrote in --output")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary line")
    p.set_defaults(func=cmd_shards_from_labels)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _digits(text: str) -> int:
    import argparse

    value = int(text)
    if not 1 <= value <= MAX_SHARD_DIGITS:
        raise argparse.ArgumentTypeError(f"must be within 1..{MAX_SHARD_DIGITS}")
    return value


def cmd_shards_from_labels(args, beam_args=None) -> int:
    from aligndata.labelled.write import LabelsConfig, shards_from_labels, summary_line

    if beam_args:
        print(f"aligndata shards-from-labels: error: unrecognized arguments: {' '.join(beam_args)}", file=sys.stderr)
        return 2
    cfg = LabelsConfig(output=args.output, images=args.images, csv=args.csv, root=args.root,
                       samples_per_shard=args.samples_per_shard, shard_digits=args.shard_digits,
                       processes=args.processes, max_file_bytes=args.max_file_bytes, image_size=args.image_size,
                       resize_mode=args.resize_mode, resize_filter=args.resize_filter,
                       encode_format=args.encode_format, encode_quality=args.encode_quality,
                       max_pixels=args.max_pixels, min_side=args.min_side, max_aspect_ratio=args.max_aspect_ratio,
                       overwrite=args.overwrite, progress=not args.quiet)
    report = shards_from_labels(cfg)  # InputError / OutputDirNotEmpty: one line and exit 2 (cli.main)
    if not args.quiet:
        print(summary_line(report, args.output), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv, prefix=("shards-from-labels",))


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``aligndata score SHARDS --model M`` (see aligndata/models/score.py for what it writes).

Run directly (``python -m aligndata.commands.score SHARDS --model M``) for the command without the main CLI.
"""

from __future__ import annotations

import json
import sys

from aligndata.commands import standalone_main
from aligndata.filters.options import non_negative_int, positive_int

MODEL_HELP = ("an `aligndata train` run (RUN or RUN/final); a transformers checkpoint directory with "
              "get_image_features/get_text_features (CLIP, ALIGN, SigLIP; loaded offline); or, with the openclip "
              "extra, open_clip:ARCH:PRETRAINED (ARCH: a built-in name or a model-config .json; PRETRAINED: a tag, "
              "downloaded by open_clip, or a weights file), open_clip:local-dir:DIR or open_clip:hf-hub:ORG/REPO")


def register(subparsers) -> None:
    p = subparsers.add_parser("score", help="a model's image-text cosine similarity for every sample of shards")
    p.add_argument("shards", metavar="SHARDS",
                   help="a directory, glob, {00000..00009}.tar pattern or URL (join several with ::)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--output", default=None,
                   help="directory for NNNNN_scores.parquet and scores.json (default: beside the shards when SHARDS "
                        "is one local directory; required otherwise)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: 256 on cuda, 64 on cpu")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="default: bf16 (autocast) on cuda, fp32 on cpu")
    p.add_argument("--workers", type=non_negative_int, default=2, help="processes decoding and preprocessing")
    p.add_argument("--overwrite", action="store_true",
                   help="rescore every shard, replacing scores files made by another model, precision or tar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_score)


def cmd_score(args, beam_args=None) -> int:
    from aligndata.commands.models import _no_library_bars_off_a_terminal
    from aligndata.models.score import ScoreConfig, ScoreError, score

    _no_library_bars_off_a_terminal()
    cfg = ScoreConfig(shards=args.shards, model=args.model, output=args.output, device=args.device,
                      batch_size=args.batch_size, precision=args.precision, workers=args.workers,
                      overwrite=args.overwrite, progress=not args.no_progress)
    try:
        summary = score(cfg)
    except ScoreError as err:
        print(f"aligndata score: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv, prefix=("score",))


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``aligndata tokenizer train``, ``aligndata train``, ``aligndata evaluate``.

``register(subparsers)`` adds the three commands to the main parser; each handler is ``handler(args, beam_args)``
returning an exit code (2 for a problem the user must fix, printed as one line, never a traceback).
Run directly (``python -m aligndata.commands.models ...``) for the same commands without the main CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from aligndata.commands import standalone_main
from aligndata.filters.options import fraction as _fraction
from aligndata.filters.options import non_negative_int as _non_negative_int
from aligndata.filters.options import positive_float as _positive_float
from aligndata.filters.options import positive_int as _positive_int
from aligndata.models.presets import PRESETS

log = logging.getLogger(__name__)


SHARDS_HELP = "shards: a directory, glob, {00000..00009}.tar pattern or fsspec URL (join several with ::)"


def register(subparsers) -> None:
    tok = subparsers.add_parser("tokenizer", help="train a WordPiece tokenizer on shard captions")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
    tok_train = tok_sub.add_parser("train", help="learn a WordPiece vocabulary from the captions of shards")
    tok_train.add_argument("--data", required=True, help=SHARDS_HELP)
    tok_train.add_argument("--output", required=True, help="directory for the tokenizer (AutoTokenizer loads it)")
    tok_train.add_argument("--vocab-size", type=_positive_int, default=100_000, help="ALIGN used 100k")
    tok_train.add_argument("--min-frequency", type=_positive_int, default=2,
                           help="ignore word pieces seen fewer times than this")
    tok_train.add_argument("--max-captions", type=_positive_int, default=None,
                           help="train on at most this many captions (default: all)")
    tok_train.set_defaults(func=cmd_tokenizer_train)

    train = subparsers.add_parser("train", help="contrastive pretraining (ALIGN / UniCL) of a dual encoder")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    ev = subparsers.add_parser("evaluate", help="retrieval / zero-shot / k-NN evaluation of a trained model")
    ev.add_argument("--model", required=True, help="RUN/final (a save_pretrained directory)")
    ev.add_argument("--data", required=True, help=SHARDS_HELP)
    ev.add_argument("--tasks", default="retrieval,zeroshot,knn", help="comma-separated: retrieval,zeroshot,knn")
    ev.add_argument("--classnames", default=None, help="file with one class name per line (line i = class i; default: "
                    "the classnames.txt beside --data's shards, which shards-from-labels writes)")
    ev.add_argument("--templates", default=None, help="file with prompt templates, one per line, with {}")
    ev.add_argument("--knn-train-data", default=None, help="labelled shards for the k-NN bank "
                    "(default: leave-one-out on --data)")
    ev.add_argument("--knn-k", type=_positive_int, default=5)
    ev.add_argument("--limit", type=_positive_int, default=None, help="evaluate at most this many images")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    ev.set_defaults(func=cmd_evaluate)


def _weights(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.7,0.3, got {text!r}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every weight must be > 0, got {text!r}")
    return values


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, action="append",
                   help=SHARDS_HELP + "; repeat it to mix several sets (UniCL: image-text + image-label shards)")
    p.add_argument("--data-weights", type=_weights, default=None, metavar="W1,W2,...",
                   help="each --data set's share of the samples (normalised; default: by their sizes.json counts, "
                        "as if concatenated, else equal); deterministic and exact per batch, resumable")
    p.add_argument("--output", required=True, help="run directory (checkpoints, metrics.jsonl, final/)")
    p.add_argument("--val-data", default=None, help="shards evaluated (retrieval, zero-shot, k-NN) at the end")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS))
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: train one on --data first)")
    p.add_argument("--vocab-size", type=_positive_int, default=100_000, help="when training the tokenizer")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=_positive_int, default=None)
    length.add_argument("--epochs", type=_positive_float, default=None, help="passes over sizes.json's samples")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="per rank")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate (default: the preset's; tiny/small 2e-3, b3-mini/base ALIGN's 1e-3)")
    p.add_argument("--warmup-steps", type=_non_negative_int, default=None,
                   help="linear warmup (default: min(10000, 10%% of the steps)), then linear decay to 0")
    p.add_argument("--optimizer", default=None, choices=["lamb", "adamw"],
                   help="default: the preset's; tiny/small adamw, b3-mini/base ALIGN's lamb")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--loss", default="align", choices=["align", "unicl"])
    p.add_argument("--label-smoothing", type=_fraction, default=0.1)
    p.add_argument("--temperature-init", type=_positive_float, default=None,
                   help="initial softmax temperature, learned (default: the preset's; tiny/small 0.1, which learns "
                        "in 100 steps; b3-mini/base ALIGN's 1.0)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="crop size (default: the preset's; 289 for b3-mini/base as in ALIGN)")
    p.add_argument("--resize-size", type=_positive_int, default=None,
                   help="resize before cropping (default: the preset's; 346 for b3-mini/base)")
    p.add_argument("--max-tokens", type=_positive_int, default=64)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--workers", type=_non_negative_int, default=2, help="data loader processes per rank")
    p.add_argument("--shuffle-buffer", type=_non_negative_int, default=1000, help="samples in the shuffle buffer")
    p.add_argument("--resampled", action="store_true",
                   help="draw shards with replacement (virtual epochs; any number of shards per rank/worker)")
    p.add_argument("--cache-images", action="store_true",
                   help="keep decoded, resized training images in memory (resize-size^2 x 3 bytes each): later "
                        "epochs skip JPEG decoding; for small corpora trained for many epochs")
    p.add_argument("--classnames", default=None,
                   help="class names file: .cls samples get a random prompt of their class as text (a --data set's "
                        "own classnames.txt, which shards-from-labels writes, comes first; also the --val-data names)")
    p.add_argument("--grad-clip", type=_positive_float, default=1.0, help="max gradient norm")
    p.add_argument("--save-every", type=_positive_int, default=1000, help="checkpoint every N steps (and at the end)")
    p.add_argument("--keep-checkpoints", type=_positive_int, default=2)
    p.add_argument("--log-every", type=_positive_int, default=10, help="metrics.jsonl line every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--stop-after", type=_positive_int, default=None,
                   help="stop (with a checkpoint) after N steps of this invocation; continue later with --resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_tokenizer_train(args, beam_args=None) -> int:
    from aligndata.shards.spec import ShardSetError, resolve
    from aligndata.models.tokenizer import train_tokenizer_on_shards
    from aligndata.models.train import TrainError, class_prompts, classnames_files

    try:
        # a shard set with its own classnames.txt (shards-from-labels) is trained as prompts of its classes, as
        # `train` does: its tokenizer learns those texts too
        shards = resolve(args.data)
        files = classnames_files(shards)
        names = sorted({name for listed, _ in files for name in listed})
        tok = train_tokenizer_on_shards(shards, args.output, args.vocab_size, args.min_frequency,
                                        args.max_captions, prompts=class_prompts(names))
    except (ShardSetError, TrainError, ValueError) as err:
        return _fail("tokenizer train", err)
    where = ", ".join(path for _, path in files)
    learned = f" (and the prompts of the {len(names)} classes in {where})" if files else ""
    print(f"tokenizer with {len(tok)} tokens written to {args.output}{learned}", file=sys.stderr)
    return 0


def train_config(args):
    from aligndata.models.train import TrainConfig

    return TrainConfig(
        data=args.data[0] if len(args.data) == 1 else args.data, data_weights=args.data_weights, output=args.output, val_data=args.val_data, preset=args.preset, tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, optimizer=args.optimizer, weight_decay=args.weight_decay, loss=args.loss,
        label_smoothing=args.label_smoothing, temperature_init=args.temperature_init, image_size=args.image_size, resize_size=args.resize_size,
        max_tokens=args.max_tokens, precision=args.precision, workers=args.workers, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume, seed=args.seed, device=args.device,
        grad_clip=args.grad_clip, shuffle_buffer=args.shuffle_buffer, resampled=args.resampled,
        cache_images=args.cache_images,
        classnames=args.classnames, log_every=args.log_every, stop_after=args.stop_after,
        progress=not args.no_progress,
    )


def cmd_train(args, beam_args=None) -> int:
    from aligndata.models.evaluate import EvalError
    from aligndata.shards.spec import ShardSetError
    from aligndata.models.train import TrainError, train

    import torch

    try:
        summary = train(train_config(args))
    except (TrainError, ShardSetError, EvalError) as err:
        return _fail("train", err)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2, sort_keys=True), file=sys.stderr)
    return 0


def _read_lines(path: str | None, what: str) -> list[str] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    if not lines:
        raise ValueError(f"{what} {path} is empty")
    return lines


def cmd_evaluate(args, beam_args=None) -> int:
    import torch

    from aligndata.models.data import DEFAULT_TEMPLATES
    from aligndata.models.evaluate import TASKS, EvalError, evaluate_model, load_trained
    from aligndata.shards.spec import ShardSetError

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        return _fail("evaluate", f"--tasks: unknown task(s) {unknown} (choose from {', '.join(TASKS)})")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    _no_library_bars_off_a_terminal()
    try:
        classnames = _read_lines(args.classnames, "--classnames") or _classnames_beside(args.data)
        templates = _read_lines(args.templates, "--templates") or DEFAULT_TEMPLATES
        if any("{}" not in t for t in templates):
            raise ValueError("--templates: every template needs a {} where the class name goes")
        model, tokenizer, settings = load_trained(args.model, device)
        result = evaluate_model(model, tokenizer, args.data, settings["image_size"], settings["resize_size"],
                                tasks=tasks, classnames=classnames, templates=templates, device=device,
                                max_tokens=settings["max_tokens"], knn_data=args.knn_train_data, k=args.knn_k,
                                limit=args.limit)
    except (EvalError, ShardSetError, OSError, ValueError) as err:
        return _fail("evaluate", err)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


def _classnames_beside(data: str) -> list[str] | None:
    from aligndata.models.train import TrainError, shard_set_classnames
    from aligndata.shards.spec import resolve

    try:
        found = shard_set_classnames(resolve(data))
    except TrainError as err:
        raise ValueError(str(err)) from None
    return found[0] if found else None


def _no_library_bars_off_a_terminal() -> None:
    """transformers' own tqdm bars ("Loading weights") fill a log file with carriage returns: off there."""
    from aligndata.progress_bar import is_terminal

    if not is_terminal(sys.stderr):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _fail(command: str, err) -> int:
    print(f"aligndata {command}: error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return standalone_main(register, argv)

if __name__ == "__main__":
    sys.exit(main())

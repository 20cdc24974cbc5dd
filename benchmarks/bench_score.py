"""`aligndata score` throughput: samples/s end to end (read tars, decode, preprocess in workers, both towers, write
the parquet), and the loader alone (read + decode + preprocess + tokenize), per model.

Models are randomly initialised (nothing is downloaded; speed does not depend on the weights) and loaded by
``aligndata score`` from disk as a user's would be:

* ``tiny``, ``small``, ``b3-mini``, ``base``: our presets, saved as ``aligndata train`` saves RUN/final;
* ``open_clip-ViT-B-32``: open_clip's ViT-B/32 architecture with its own BPE tokenizer, as a weights file
  (``open_clip:ViT-B-32:FILE``; needs the openclip extra).

Shards: the synthetic world at 346 px JPEGs (what ``aligndata curate`` writes by default), by the real shard writer.

    .venv/bin/python benchmarks/bench_score.py [--models tiny,small,b3-mini,open_clip-ViT-B-32] [--device cpu|cuda]

On a GPU: ``--device cuda`` (bf16 autocast, larger batches and more samples by default). Writes
benchmarks/results/score_<device>.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from common import emit

from aligndata.models import presets, synthetic
from aligndata.models.encoders import load_encoder
from aligndata.models.score import ScoreConfig, ShardBatches, score
from aligndata.models.tokenizer import train_tokenizer
from aligndata.models.train import export

PRESETS = ("tiny", "small", "b3-mini", "base")
CPU_SAMPLES = {"tiny": 1024, "small": 512, "b3-mini": 96, "base": 32, "open_clip-ViT-B-32": 128}
GPU_SAMPLES = 8192


def make_model(name: str, directory: str) -> str:
    """A model directory (or open_clip spec) for ``name``, randomly initialised."""
    if name in PRESETS:
        texts = [p.format(c=c, s=s) for p in synthetic.PHRASES for c in synthetic.COLOURS for s in synthetic.SHAPES]
        tokenizer = train_tokenizer(texts * 3, vocab_size=200, min_frequency=1)
        p = presets.PRESETS[name]
        model = presets.build_model(name, vocab_size=len(tokenizer), image_size=p.image_size, seed=0)
        path = os.path.join(directory, name)
        export(model, tokenizer, path, p.image_size, p.resize_size, {"max_tokens": 64, "preset": name})
        return path
    if name.startswith("open_clip-"):
        import open_clip

        arch = name[len("open_clip-"):]
        model = open_clip.create_model(arch, pretrained=None)
        path = os.path.join(directory, f"{arch}.pt")
        torch.save(model.state_dict(), path)
        return f"open_clip:{arch}:{path}"
    raise SystemExit(f"unknown model {name!r}: choose from {', '.join(PRESETS)}, open_clip-ARCH")


def loader_rate(urls: list[str], spec: str, batch_size: int, workers: int) -> float:
    """Samples/s of the data side alone: what the model is fed at most."""
    encoder = load_encoder(spec)
    loader = torch.utils.data.DataLoader(ShardBatches(urls, encoder.preprocess, batch_size), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    start = time.perf_counter()
    count = sum(len(batch["keys"]) for batch in loader)
    return count / (time.perf_counter() - start)


def model_rate(urls: list[str], spec: str, batch_size: int, device: str, precision: str, workers: int,
               repeats: int) -> float:
    """Samples/s of both towers alone, on one prepared batch, with the torch threads score gives the model."""
    from aligndata.models.score import autocast, batch_scores, model_threads

    if device == "cpu":
        torch.set_num_threads(model_threads(workers))
    encoder = load_encoder(spec).to(device)
    batch = next(iter(ShardBatches(urls, encoder.preprocess, batch_size)))
    device = torch.device(device)
    with autocast(device, precision):
        batch_scores(encoder, batch, device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            batch_scores(encoder, batch, device)  # ends in .cpu(): synchronised
        return repeats * len(batch["keys"]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny,small,b3-mini,open_clip-ViT-B-32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="default: bf16 on cuda")
    parser.add_argument("--workers", type=int, default=2, help="score's default")
    parser.add_argument("--batch-size", type=int, default=None, help="default: score's (64 on cpu, 256 on cuda)")
    parser.add_argument("--samples", type=int, default=None, help="per model (default by model and device)")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)  # other work on the machine: these numbers depend on it
    batch_size = args.batch_size or (256 if args.device == "cuda" else 64)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            n = args.samples or (GPU_SAMPLES if args.device == "cuda" else CPU_SAMPLES.get(name, 256))
            per_shard = max(1, n // 4)
            shards = os.path.join(tmp, f"shards-{name}")
            urls = synthetic.write_world(shards, shards=4, per_shard=per_shard, seed=0, size=346)
            spec = make_model(name, tmp)
            out = os.path.join(tmp, f"scores-{name}")
            common = dict(model=spec, output=out, device=args.device, batch_size=batch_size,
                          precision=args.precision, workers=args.workers, overwrite=True, progress=False)
            # Warm-up on one shard (allocator, kernels, cudnn autotune), then every shard timed.
            score(ScoreConfig(shards=urls[0], **common))
            summary = score(ScoreConfig(shards=shards, **common))
            loader = loader_rate(urls, spec, batch_size, args.workers)
            threads = torch.get_num_threads()
            model = model_rate(urls, spec, batch_size, args.device, summary["precision"], args.workers,
                               repeats=20 if args.device == "cuda" else 2)
            torch.set_num_threads(threads)
            params = sum(p.numel() for p in load_encoder(spec).model.parameters())
            results[name] = {"samples": summary["samples"], "batch_size": batch_size,
                             "precision": summary["precision"], "params": params,
                             "score_samples_per_s": summary["samples_per_s"], "seconds": summary["seconds"],
                             "model_load_seconds": summary["model_load_seconds"],
                             "model_torch_threads": summary["torch_threads"],
                             "loader_samples_per_s": round(loader, 1), "model_samples_per_s": round(model, 1),
                             # On a CPU the loader and the model share the cores: this is the rate if nothing
                             # overlapped and nothing were lost, so score / this is our pipeline's efficiency.
                             "serial_samples_per_s": round(1 / (1 / loader + 1 / model), 1),
                             "model_id": summary["model"]}
            print(name, results[name], flush=True)
    emit(f"score_{args.device}", {"device": args.device, "workers": args.workers,
                                  "cpus": os.cpu_count(), "load_average_1min_at_start": load_start,
                                  "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                                  "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                                  "models": results})


if __name__ == "__main__":
    main()

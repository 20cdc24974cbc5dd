"""Trainer throughput: training samples/s per preset, and the data loader's samples/s alone.

The loader must never be the bottleneck: for each preset we time (a) the loader alone at the default workers
(decode 346-px JPEGs as curate writes them, resize, crop, flip, tokenize, batch) and (b) full training steps
(forward, loss, backward, optimizer) fed by that loader, and report the ratio. Shards are the synthetic world
written by the real shard writer at curate's output size.

    .venv/bin/python benchmarks/bench_train.py [--presets tiny,small,b3-mini] [--device cpu|cuda]

Writes benchmarks/results/train_<device>.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from common import emit

from aligndata.models import data, optim, presets, synthetic
from aligndata.models.losses import AlignLoss
from aligndata.models.tokenizer import train_tokenizer

BATCH = {"tiny": 32, "small": 32, "b3-mini": 8, "base": 4}


def loader_rate(cfg: data.DataConfig, tokenizer, batches: int) -> float:
    it = iter(data.Loader(cfg, tokenizer))
    next(it)  # worker start-up and the first shuffle-buffer fill are not steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.batch_size / (time.perf_counter() - start)


def train_rate(preset: str, cfg: data.DataConfig, tokenizer, steps: int, device: str, precision: str) -> dict:
    model = presets.build_model(preset, vocab_size=len(tokenizer), image_size=cfg.image_size).to(device)
    model.text_model.pooler.requires_grad_(False)
    opt = optim.build_optimizer("lamb", model, 1e-3, 1e-5)
    loss_fn = AlignLoss(0.1, gather=False)
    it = iter(data.Loader(cfg, tokenizer))
    wait = 0.0

    def step():
        nonlocal wait
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        ctx = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(
            device, enabled=False)
        with ctx:
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                        pixel_values=batch["pixel_values"].to(device))
        loss = loss_fn(out.image_embeds, out.text_embeds, model.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up step (allocations, cudnn autotune)
    if device == "cuda":
        torch.cuda.synchronize()
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"params": presets.count_parameters(model), "samples_per_s": steps * cfg.batch_size / elapsed,
            "seconds_per_step": elapsed / steps, "data_wait_fraction": wait / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="tiny,small,b3-mini")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workers", type=int, default=2, help="the trainer's default")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per preset (default by device)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # 346 px: the size `aligndata curate` writes by default
        urls = synthetic.write_world(tmp, shards=8, per_shard=64, seed=0, size=346)
        texts = [p.format(c=c, s=s) for p in synthetic.PHRASES for c in synthetic.COLOURS for s in synthetic.SHAPES]
        tokenizer = train_tokenizer(texts * 3, vocab_size=200, min_frequency=1)
        results = {}
        for preset in args.presets.split(","):
            p = presets.PRESETS[preset]
            batch = BATCH[preset] * (8 if args.device == "cuda" else 1)
            cfg = data.DataConfig(urls=urls, batch_size=batch, image_size=p.image_size, resize_size=p.resize_size,
                                  workers=args.workers, shuffle_buffer=256, resampled=True)
            steps = args.steps or (20 if args.device == "cuda" else {"tiny": 10, "small": 5}.get(preset, 2))
            loader = loader_rate(cfg, tokenizer, batches=max(4, steps))
            trained = train_rate(preset, cfg, tokenizer, steps, args.device, args.precision)
            results[preset] = {"batch_size": batch, "image_size": p.image_size, "steps": steps,
                               "loader_samples_per_s": round(loader, 1),
                               "train_samples_per_s": round(trained["samples_per_s"], 2),
                               "seconds_per_step": round(trained["seconds_per_step"], 3),
                               "data_wait_fraction": round(trained["data_wait_fraction"], 3),
                               "loader_headroom": round(loader / trained["samples_per_s"], 1),
                               "params": trained["params"]}
            print(preset, results[preset], flush=True)
    emit(f"train_{args.device}", {"device": args.device, "precision": args.precision, "workers": args.workers,
                                  "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                  "presets": results})


if __name__ == "__main__":
    main()

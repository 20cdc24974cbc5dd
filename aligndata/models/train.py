"""The training loop: ALIGN/UniCL contrastive pretraining of a transformers AlignModel on WebDataset shards.

One process, or one per device under ``torchrun`` (gloo on CPU, nccl on GPU). Every rank reads its own share of
the shards; embeddings are gathered with gradient inside the loss, and DDP averages gradients. The run directory:

    RUN/train_config.json     every option, resolved (steps, warmup, image sizes, world size)
    RUN/tokenizer/            the WordPiece tokenizer (trained first when --tokenizer is not given)
    RUN/checkpoints/          step_NNNNNNNN.pt, atomic; --resume continues from the newest
    RUN/metrics.jsonl         one line per logged step: loss, lr, temperature, samples/s, corrupt samples
    RUN/final/                save_pretrained: AlignModel + tokenizer + image processor (loads offline)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from aligndata.models import checkpoint, data, optim, presets, transforms
from aligndata.models.losses import MIN_TEMPERATURE, build_loss
from aligndata.progress_bar import progress_bar
from aligndata.shards import spec
from aligndata.shards.contract import CLASSNAMES

log = logging.getLogger(__name__)


class TrainError(Exception):
    """A training run cannot start as asked (bad options, missing data, existing run without --resume)."""


@dataclass
class TrainConfig:
    data: str | list[str]  # one SHARDS spec, or several mixed at data_weights (UniCL: image-text + image-label)
    output: str
    val_data: str | None = None
    preset: str = "tiny"
    tokenizer: str | None = None
    vocab_size: int = 100_000
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    lr: float | None = None  # None: the preset's recipe (models/presets.py)
    warmup_steps: int | None = None
    optimizer: str | None = None
    weight_decay: float = 1e-5
    loss: str = "align"
    label_smoothing: float = 0.1
    temperature_init: float | None = None
    image_size: int | None = None
    resize_size: int | None = None
    max_tokens: int = 64
    precision: str = "fp32"
    workers: int = 2
    save_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    grad_clip: float | None = 1.0
    shuffle_buffer: int = 1000
    resampled: bool = False
    cache_images: bool = False
    classnames: str | None = None
    data_weights: list[float] | None = None  # None: by sizes.json's sample counts when every set has one, else equal
    log_every: int = 10
    stop_after: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ setup


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch.distributed.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(choice: str, dist: Dist) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainError("--device cuda was asked for but no CUDA device is available")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def device_kind(choice: str) -> str:
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        torch.distributed.barrier()


def gather_objects(obj, dist: Dist) -> list:
    if dist.world_size == 1:
        return [obj]
    out = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------- planning


def resolve_tokenizer(cfg: TrainConfig, dist: Dist, urls: list[str], prompts: list[str] = ()):
    from aligndata.models.tokenizer import ShardCaptions, load_tokenizer, train_tokenizer

    run_tok = os.path.join(cfg.output, "tokenizer")
    if cfg.tokenizer:
        if not os.path.exists(os.path.join(cfg.tokenizer, "tokenizer.json")) and \
                not os.path.exists(os.path.join(cfg.tokenizer, "tokenizer_config.json")):
            raise TrainError(f"--tokenizer {cfg.tokenizer}: no tokenizer files there "
                             "(make one with `aligndata tokenizer train`)")
        tok = load_tokenizer(cfg.tokenizer)
        if dist.main:
            tok.save_pretrained(run_tok)
        return tok
    if not os.path.exists(os.path.join(run_tok, "tokenizer.json")):
        if dist.main:
            log.info("no --tokenizer: training a WordPiece vocabulary (max %d) on the captions", cfg.vocab_size)
            # the class prompts too: an image-label set's captions are bare class names
            train_tokenizer(ShardCaptions(urls, extra=prompts), vocab_size=cfg.vocab_size).save_pretrained(run_tok)
        barrier(dist)
    return load_tokenizer(run_tok)


def plan_steps(cfg: TrainConfig, urls: list[str], dist: Dist) -> tuple[int, int | None]:
    """(total steps, steps per epoch or None). Epochs need sizes.json to know the data set size."""
    if len(data_specs(cfg)) > 1:
        if cfg.steps is None:
            raise TrainError("several --data sets are mixed at rates, so an epoch of the mix means nothing: give "
                             "--steps N")
        return cfg.steps, None
    total = spec.ShardSet(data_specs(cfg)[0], urls).total_samples()
    global_batch = cfg.batch_size * dist.world_size
    per_epoch = total // global_batch if total else None
    if total is not None and per_epoch == 0:
        raise TrainError(f"the data holds {total} samples, fewer than one global batch of {global_batch}; "
                         "lower --batch-size")
    if cfg.steps is not None:
        return cfg.steps, per_epoch
    if cfg.epochs is None:
        raise TrainError("give --steps N or --epochs E")
    if per_epoch is None:
        raise TrainError("--epochs needs sizes.json beside the shards (sample counts); give --steps instead")
    return max(1, math.ceil(cfg.epochs * per_epoch)), per_epoch


def _validate(cfg: TrainConfig) -> None:
    if cfg.preset not in presets.PRESETS:
        raise TrainError(f"unknown --preset {cfg.preset!r} (choose {', '.join(presets.PRESETS)})")
    if cfg.steps is not None and cfg.epochs is not None:
        raise TrainError("give either --steps or --epochs, not both")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise TrainError(f"unknown --precision {cfg.precision!r}")
    if cfg.batch_size < 2:
        raise TrainError("--batch-size must be >= 2 (a contrastive loss needs negatives)")


def data_specs(cfg: TrainConfig) -> list[str]:
    return [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)


def shard_set_classnames(shards: spec.ShardSet) -> tuple[list[str], str] | None:
    """(names, path) of the classnames.txt beside a shard set's shards (`aligndata shards-from-labels` writes
    one), when they all lie in one directory that holds it; else None."""
    parents = {shards.parent(path) for path in shards.paths}
    return _read_classnames(shards, parents.pop()) if len(parents) == 1 else None


def classnames_files(shards: spec.ShardSet) -> list[tuple[list[str], str]]:
    """(names, path) of every classnames.txt in the directories of a shard set's shards (a joined spec such as
    ``web/::in21k/`` may hold one image-label set among image-text ones)."""
    found = (_read_classnames(shards, parent) for parent in sorted({shards.parent(p) for p in shards.paths}))
    return [names for names in found if names is not None]


def _read_classnames(shards: spec.ShardSet, directory: str) -> tuple[list[str], str] | None:
    path = shards.join(directory, CLASSNAMES)
    storage = shards.storage(path)
    try:
        if not storage.exists(path):
            return None
        with storage.open_read(path) as handle:
            names = [line.strip() for line in handle.read().decode("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise TrainError(f"{path}: cannot read the class names ({err})") from err
    if not names:
        raise TrainError(f"{path}: no class names (one per line, line i = class i)")
    return names, path


def class_prompts(names: list[str]) -> list[str]:
    """Every DEFAULT_TEMPLATES prompt of each class name: what an image-label set's samples are trained as (their
    captions are the bare names), so a tokenizer for them learns these texts with the captions."""
    return [template.format(name) for name in names for template in data.DEFAULT_TEMPLATES]


def build_sources(cfg: TrainConfig) -> tuple[list[data.Source], list[dict]]:
    """The shard sets to train on, with their weights and class names (a set's own classnames.txt, else
    --classnames), and what was chosen (for train_config.json)."""
    specs = data_specs(cfg)
    if not specs:
        raise TrainError("give at least one --data")
    shard_sets = [spec.resolve(one) for one in specs]
    fallback = _classnames(cfg.classnames)
    weights = cfg.data_weights
    if weights is not None and len(weights) != len(specs):
        raise TrainError(f"--data-weights has {len(weights)} value(s) for {len(specs)} --data set(s)")
    if weights is not None and any(not w > 0 for w in weights):
        raise TrainError(f"--data-weights must all be > 0, got {weights}")
    weights_from = "--data-weights"
    if weights is None:
        sizes = [shards.total_samples() for shards in shard_sets]
        if len(specs) > 1 and all(sizes):
            weights, weights_from = [float(n) for n in sizes], "sizes.json (as if the sets were concatenated)"
        else:
            weights, weights_from = [1.0] * len(specs), "equal" if len(specs) > 1 else "one set"
    sources, described = [], []
    for one, shards, weight in zip(specs, shard_sets, weights):
        own = shard_set_classnames(shards)
        names, names_from = (own if own is not None else (fallback, cfg.classnames if fallback else None))
        sources.append(data.Source(shards.paths, float(weight), names, None, name=one))
        described.append({"data": one, "shards": len(shards.paths), "weight": float(weight),
                          "share": float(weight) / sum(weights), "weights_from": weights_from,
                          "classnames": names_from, "classes": len(names) if names else None})
    if len(sources) > 1:
        data.joint_classes(sources)
    return sources, described


def val_classnames(cfg: TrainConfig) -> list[str] | None:
    """The val set's class names: its own classnames.txt, else --classnames."""
    own = shard_set_classnames(spec.resolve(cfg.val_data)) if cfg.val_data else None
    return own[0] if own is not None else _classnames(cfg.classnames)


def _classnames(path: str | None) -> list[str] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    except OSError as err:
        raise TrainError(f"--classnames {path}: {err}") from err
    if not names:
        raise TrainError(f"--classnames {path}: no class names (one per line, line i = class i)")
    return names


# ---------------------------------------------------------------------------------------------- the loop


class MetricsLog:
    """RUN/metrics.jsonl; on resume, lines past the checkpoint's step (from the interrupted run) are dropped."""

    def __init__(self, path: str, resume_step: int) -> None:
        self.path = path
        kept = []
        if resume_step and os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        if json.loads(line).get("step", 0) <= resume_step:
                            kept.append(line)
                    except ValueError:
                        continue
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(kept)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def with_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the preset's optimizer, lr and initial temperature wherever ``cfg`` leaves them None."""
    recipe = presets.PRESETS[cfg.preset].recipe
    return replace(cfg, **{k: v for k, v in recipe.items() if getattr(cfg, k) is None})


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary. Raises TrainError for problems a user must fix."""
    _validate(cfg)
    cfg = with_recipe(cfg)
    dist = init_distributed(device_kind(cfg.device))
    device = pick_device(cfg.device, dist)
    preset = presets.PRESETS[cfg.preset]
    image_size = cfg.image_size or preset.image_size
    resize_size = cfg.resize_size or max(preset.resize_size, image_size)
    transforms.check_sizes(image_size, resize_size)
    if cfg.precision == "bf16" and device.type == "cpu":
        log.info("bf16 autocast on CPU: speed depends on the CPU's bf16 support")

    sources, data_sets = build_sources(cfg)
    urls = [url for source in sources for url in source.urls]
    if os.path.isdir(cfg.output) and checkpoint.has_checkpoint(cfg.output) and not cfg.resume:
        raise TrainError(f"{cfg.output} already holds checkpoints: pass --resume to continue it, or choose a new "
                         "--output")
    os.makedirs(cfg.output, exist_ok=True)
    # the prompts of the classes of sets with their own classnames.txt (shards-from-labels output, whose captions are
    # bare class names) join the tokenizer's corpus; a --classnames fallback leaves the tokenizer as it was
    names = sorted({name for source, record in zip(sources, data_sets) if record["classnames"] not in
                    (None, cfg.classnames) for name in source.classnames})
    tokenizer = resolve_tokenizer(cfg, dist, urls, class_prompts(names))
    total_steps, steps_per_epoch = plan_steps(cfg, urls, dist)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else optim.default_warmup(total_steps)

    model = presets.build_model(cfg.preset, vocab_size=len(tokenizer), image_size=image_size,
                                max_tokens=cfg.max_tokens, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id or 0,
                                temperature_init=cfg.temperature_init)
    # AlignModel.forward never uses the BERT pooler ([CLS] goes straight to text_projection): freeze it so DDP
    # does not wait for gradients that never come.
    if model.text_model.pooler is not None:
        model.text_model.pooler.requires_grad_(False)
    model.to(device)
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing, gather=dist.world_size > 1)
    optimizer = optim.build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)
    scheduler = optim.build_scheduler(optimizer, warmup, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    resolved = {**asdict(cfg), "image_size": image_size, "resize_size": resize_size, "total_steps": total_steps,
                "warmup_steps": warmup, "steps_per_epoch": steps_per_epoch, "world_size": dist.world_size,
                "vocab_size": len(tokenizer), "shards": len(urls), "device": str(device), "data_sets": data_sets}
    step, stream_state = 0, None
    torch.manual_seed(cfg.seed + dist.rank)  # dropout/drop-connect streams differ per rank, repeat per run
    if cfg.resume:
        found = checkpoint.latest(cfg.output)
        if found is None:
            log.warning("--resume: no checkpoint in %s; starting from step 0", cfg.output)
        else:
            path, payload = found
            step, stream_state = _restore(payload, model, optimizer, scheduler, scaler, dist)
            log.info("resumed from %s (step %d)", path, step)
    if dist.main:
        with open(os.path.join(cfg.output, "train_config.json"), "w", encoding="utf-8") as handle:
            json.dump(resolved, handle, indent=2, sort_keys=True)

    data_cfg = data.DataConfig(
        urls=urls, batch_size=cfg.batch_size, image_size=image_size, resize_size=resize_size,
        max_tokens=cfg.max_tokens, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer, resampled=cfg.resampled,
        rank=dist.rank, world_size=dist.world_size, workers=cfg.workers, augment=True,
        classnames=sources[0].classnames, cache_images=cfg.cache_images, sources=sources)
    try:
        loader = data.Loader(data_cfg, tokenizer, stream_state)
    except data.DataError as err:
        raise TrainError(str(err)) from err

    net = model
    if dist.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = MetricsLog(os.path.join(cfg.output, "metrics.jsonl"), step) if dist.main else None
    stop_at = total_steps if cfg.stop_after is None else min(total_steps, step + cfg.stop_after)
    bar = _progress(cfg, dist, step, total_steps)
    model.train()
    window_start, window_samples, data_wait = time.perf_counter(), 0, 0.0
    batches = iter(loader)
    last_loss = float("nan")
    while step < stop_at:
        fetch_start = time.perf_counter()
        try:
            batch = next(batches)
        except data.DataError as err:
            raise TrainError(str(err)) from err
        data_wait += time.perf_counter() - fetch_start
        with autocast(device, cfg.precision):
            out = net(input_ids=batch["input_ids"].to(device, non_blocking=True),
                      attention_mask=batch["attention_mask"].to(device, non_blocking=True),
                      pixel_values=batch["pixel_values"].to(device, non_blocking=True))
        loss = loss_fn(out.image_embeds, out.text_embeds, model.temperature, batch["labels"].to(device))
        if not torch.isfinite(loss):
            raise TrainError(f"loss is {loss.item()} at step {step + 1}: lower --lr, or use fp32/bf16 precision")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():  # keep the temperature positive (HF's raw parameter has no constraint)
            model.temperature.clamp_(min=MIN_TEMPERATURE)
        step += 1
        window_samples += cfg.batch_size * dist.world_size
        last_loss = loss.item()
        if bar is not None:
            bar.update(1)
            bar_elapsed = time.perf_counter() - window_start
            bar.set_postfix(loss=f"{last_loss:.4f}", temp=f"{model.temperature.item():.4f}",
                            samples_s=f"{window_samples / bar_elapsed:.0f}" if bar_elapsed > 0 else "-")
        if step % cfg.log_every == 0 or step == stop_at:
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "epoch": (step / steps_per_epoch) if steps_per_epoch else None,
                      "loss": last_loss, "lr": scheduler.get_last_lr()[0],
                      "temperature": model.temperature.item(),
                      "samples_per_s": window_samples / elapsed if elapsed > 0 else None,
                      "data_wait_fraction": data_wait / elapsed if elapsed > 0 else None,
                      "corrupt_samples": loader.corrupt_counts()}
            if metrics is not None:
                metrics.write(record)
            window_start, window_samples, data_wait = time.perf_counter(), 0, 0.0
        if step % cfg.save_every == 0 or step == stop_at:
            _save(cfg, step, model, optimizer, scheduler, scaler, loader, dist, resolved)
    if bar is not None:
        bar.close()
    summary = {"step": step, "total_steps": total_steps, "loss": last_loss, "run": cfg.output,
               "corrupt_samples": loader.corrupt_counts()}
    if step >= total_steps:
        if dist.main:
            export(model, tokenizer, os.path.join(cfg.output, "final"), image_size, resize_size, resolved)
            summary["final"] = os.path.join(cfg.output, "final")
        barrier(dist)
        if cfg.val_data and dist.main:
            from aligndata.models.evaluate import evaluate_model

            summary["val"] = evaluate_model(model, tokenizer, cfg.val_data, image_size, resize_size,
                                            classnames=val_classnames(cfg), device=device,
                                            max_tokens=cfg.max_tokens)
            with open(os.path.join(cfg.output, "val_metrics.json"), "w", encoding="utf-8") as handle:
                json.dump(summary["val"], handle, indent=2, sort_keys=True)
    barrier(dist)  # every rank done before any tears the process group down (gloo aborts otherwise)
    return summary


def _progress(cfg: TrainConfig, dist: Dist, step: int, total: int):
    """A tqdm bar on a terminal; in a log file or pipe, a plain line every 30 s (no carriage returns)."""
    if not (cfg.progress and dist.main):
        return None
    return progress_bar(total, initial=step, unit="step", desc="train", stream=sys.stderr)


def _save(cfg, step, model, optimizer, scheduler, scaler, loader, dist, resolved) -> None:
    rng = gather_objects(checkpoint.rng_state(), dist)
    streams = gather_objects(loader.state().to_dict(), dist)
    if dist.main:
        checkpoint.save(cfg.output, step, {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng, "data": streams,
            "world_size": dist.world_size, "config": resolved,
        }, keep=cfg.keep_checkpoints)
    barrier(dist)


def _restore(payload, model, optimizer, scheduler, scaler, dist: Dist):
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    if payload.get("world_size") == dist.world_size:
        checkpoint.set_rng_state(payload["rng"][dist.rank])
        state = data.StreamState.from_dict(payload["data"][dist.rank])
    else:
        log.warning("checkpoint was written by %s ranks, this run has %d: the data stream restarts",
                    payload.get("world_size"), dist.world_size)
        state = None
    return int(payload["step"]), state


# ---------------------------------------------------------------------------------------------- export


def export(model, tokenizer, directory: str, image_size: int, resize_size: int, settings: dict) -> str:
    """``save_pretrained`` model + tokenizer + image processor, and aligndata's settings, into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    # The saved tokenizer truncates (when asked to) where the text tower really stops: its position table, or the
    # tokens it was trained on when fewer (positions past those were never trained). Without this it says 512,
    # and `truncation=True` still hands a 128-position tower 512 tokens.
    limit = min(model.config.text_config.max_position_embeddings, settings.get("max_tokens", 64))
    trained_limit, tokenizer.model_max_length = tokenizer.model_max_length, limit
    try:
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.model_max_length = trained_limit
    transforms.image_processor(image_size, resize_size).save_pretrained(directory)
    meta = {"image_size": image_size, "resize_size": resize_size, "max_tokens": settings.get("max_tokens", 64),
            "preset": settings.get("preset"), "steps": settings.get("total_steps"), "loss": settings.get("loss")}
    with open(os.path.join(directory, "aligndata.json"), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)
    return directory

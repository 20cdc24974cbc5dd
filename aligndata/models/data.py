"""The training data stream: shards -> samples -> shuffle -> decode/augment/tokenize -> batches.

Stages (webdataset's, composed by hand so every random choice is seeded and the position is resumable):

1. Shards for (epoch, rank, worker): the shard list shuffled with ``Random(seed, epoch)`` (the same on every rank),
   then dealt round-robin to the ``world * workers`` consumers. In resampled mode each consumer instead draws
   shards with replacement forever (open_clip's ``--dataset-resampled``), so any number of shards feeds any number
   of consumers.
2. Raw samples from the tars (aligndata.shards.reader: unsafe members refused, problems counted and logged, a
   broken shard skipped), through a shuffle buffer seeded per (epoch, consumer).
3. Decode + ALIGN augmentation (per-sample RNG from seed, epoch and position, so augmentation does not depend on
   which worker handled a sample) + the caption (or, for ``.cls`` samples with class names, a prompt).
   Corrupt samples (undecodable image, no image, no caption) are skipped and counted, never fatal.
4. Batches of exactly ``batch_size`` (every rank must feed the same shapes to the collective ops).

Each consumer's stream runs epoch after epoch without end; the trainer decides how many batches make an epoch
(from ``sizes.json``). That way every rank always has a next batch: no rank waits forever in an all_gather for a
rank whose shards ran out, the classic hang of distributed webdataset training with uneven shards.

Position: each batch carries its consumer's (epoch, raw samples consumed in that epoch). Resuming skips that many
raw samples *before* decoding (cheap) and restarts the DataLoader workers rotated so the next batch comes from the
consumer whose turn it was: the resumed stream is identical to the uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from aligndata.models import transforms
from aligndata.models.losses import caption_label, class_label
from aligndata.shards import reader
from aligndata.shards.reader import Sample, ShardProblem

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.")


class DataError(Exception):
    """The data cannot feed this run (too few shards for the consumers, nothing decodable)."""


@dataclass
class DataConfig:
    urls: list[str]
    batch_size: int
    image_size: int
    resize_size: int
    max_tokens: int = 64
    seed: int = 0
    shuffle_buffer: int = 1000
    resampled: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    augment: bool = True
    classnames: list[str] | None = None
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    # Keep every decoded, resized training image in memory (resize_size^2 * 3 bytes each: 15 KB at 72 px, 359 KB
    # at 346): later epochs skip JPEG decoding. For small corpora trained for many epochs; batches are identical.
    cache_images: bool = False

    @property
    def consumers(self) -> int:
        return self.world_size * max(1, self.workers)


@dataclass
class Position:
    """Where one consumer (rank, logical worker) stands: epoch and raw samples already consumed in it."""

    epoch: int = 0
    consumed: int = 0


@dataclass
class StreamState:
    """The resumable state of a rank's stream: per logical worker positions and whose batch comes next."""

    positions: dict[int, Position] = field(default_factory=dict)
    next_worker: int = 0

    def to_dict(self) -> dict:
        return {"next_worker": self.next_worker,
                "positions": {str(w): [p.epoch, p.consumed] for w, p in self.positions.items()}}

    @classmethod
    def from_dict(cls, data: dict | None) -> "StreamState":
        if not data:
            return cls()
        return cls({int(w): Position(*v) for w, v in data["positions"].items()}, int(data["next_worker"]))


def check_consumers(config: DataConfig) -> None:
    """Fail fast, with a fix, when the shards cannot be dealt to every rank and worker."""
    if not config.resampled and len(config.urls) < config.consumers:
        raise DataError(
            f"{len(config.urls)} shard(s) cannot feed {config.world_size} rank(s) x {max(1, config.workers)} "
            f"worker(s) = {config.consumers} readers without some reading nothing; pass --resampled (draw shards "
            f"with replacement), lower --workers, or write more shards (curate --samples-per-shard)")


def _mix(*parts) -> str:
    return ":".join(str(p) for p in parts)


def epoch_shards(config: DataConfig, epoch: int, consumer: int) -> list[str]:
    order = list(config.urls)
    random.Random(_mix("shards", config.seed, epoch)).shuffle(order)
    return order[consumer::config.consumers]


RESAMPLED_GIVE_UP = 10_000  # consecutive undecodable samples before a resampled reader stops with an error


def _resampled_shards(config: DataConfig, consumer: int, seen_samples) -> Iterator[str]:
    """Shards drawn with replacement, forever; raises if many draws yield no sample at all (all empty/unreadable),
    which would otherwise spin silently."""
    rng = random.Random(_mix("resampled", config.seed, consumer))
    limit = max(100, 10 * len(config.urls))
    drawn = 0
    while True:
        drawn += 1
        if drawn > limit and not seen_samples():
            raise DataError(f"reader {consumer}: {limit} shard draws from {len(config.urls)} shard(s) gave no sample "
                            f"(empty or unreadable tars), e.g. {config.urls[0]}")
        yield config.urls[rng.randrange(len(config.urls))]


def shuffled(samples: Iterator[Sample], buffer_size: int, rng: random.Random) -> Iterator[Sample]:
    """webdataset-style shuffle buffer: fill, then emit a random element and refill its slot."""
    if buffer_size <= 1:
        yield from samples
        return
    buffer: list[Sample] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        i = rng.randrange(buffer_size)
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


class SampleDecoder:
    """Raw sample -> (pixels, text, label) or a reason it is corrupt."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.cache: dict[tuple[str, str], Image.Image] | None = {} if config.cache_images else None

    def __call__(self, raw: Sample, rng: random.Random) -> tuple[torch.Tensor, str, int] | str:
        c = self.config
        data = raw.image
        if data is None:
            return "missing_image"
        cls = raw.class_id
        if "cls" in raw.files and cls is None:
            return "bad_class"
        if cls is not None and c.classnames is not None:
            if cls >= len(c.classnames):
                return "class_out_of_range"
            text = rng.choice(c.templates).format(c.classnames[cls])
        else:
            text = raw.strict_text
            if text is None:
                return "missing_caption"
        try:
            pixels = self._pixels(raw, data, rng)
        except transforms.BadImage:
            return "bad_image"
        label = class_label(cls) if cls is not None else caption_label(text)
        return pixels, text, label

    def _pixels(self, raw: Sample, data: bytes, rng: random.Random) -> torch.Tensor:
        c = self.config
        if not c.augment:
            return transforms.eval_image(transforms.decode(data), c.image_size, c.resize_size)
        key = (raw.shard, raw.key)
        img = self.cache.get(key) if self.cache is not None else None
        if img is None:
            img = transforms.resized(transforms.decode(data, draft_size=c.resize_size), c.resize_size)
            if self.cache is not None:
                self.cache[key] = img
        return transforms.augment(img, rng, c.image_size)


def _shard_error(corrupt: Counter, url: str, exn: Exception) -> None:
    """Count a reader problem at once (resampled streams never end a pass) and log it: every unreadable shard,
    the first ten member-level problems (unsafe or oversized members skipped, odd keys), then the 100th, 1000th
    and every 10000th."""
    if isinstance(exn, ShardProblem) and not exn.fatal:
        corrupt["bad_member"] += 1
        n = corrupt["bad_member"]
        if n <= 10 or n in (100, 1000) or n % 10000 == 0:
            log.warning("shard problem in %s: %s; %d so far", url, exn, n)
        return
    corrupt["bad_shard"] += 1
    log.warning("unreadable shard (rest skipped): %s: %s", url, exn)


class ShardStream(IterableDataset):
    """Endless batches for one rank. Iterate inside a DataLoader with ``batch_size=None`` (see ``make_loader``)."""

    def __init__(self, config: DataConfig, tokenizer, state: StreamState | None = None) -> None:
        super().__init__()
        check_consumers(config)
        transforms.check_sizes(config.image_size, config.resize_size)
        self.config = config
        self.tokenizer = tokenizer
        self.state = state or StreamState()
        self.decode = SampleDecoder(config)

    def _logical_worker(self) -> int:
        info = get_worker_info()
        workers = max(1, self.config.workers)
        physical = info.id if info is not None else 0
        return (physical + self.state.next_worker) % workers

    def __iter__(self) -> Iterator[dict]:
        worker = self._logical_worker()
        c = self.config
        consumer = c.rank * max(1, c.workers) + worker
        start = self.state.positions.get(worker, Position())
        corrupt: Counter = Counter()
        pending: list[tuple[torch.Tensor, str, int, str]] = []
        epoch = start.epoch
        skip = start.consumed
        while True:
            if c.resampled:
                shard_iter: Iterator[str] = _resampled_shards(c, consumer, lambda: consumed > 0)
            else:
                shard_iter = iter(epoch_shards(c, epoch, consumer))
            raw = reader.iter_shards(shard_iter, on_error=lambda url, exn: _shard_error(corrupt, url, exn))
            consumed = 0
            produced = 0
            for sample in shuffled(raw, c.shuffle_buffer, random.Random(_mix("buffer", c.seed, epoch, consumer))):
                consumed += 1
                if c.resampled and produced == 0 and consumed - skip > RESAMPLED_GIVE_UP:
                    raise DataError(f"reader {consumer}: none of the first {RESAMPLED_GIVE_UP} samples drawn from "
                                    f"{len(c.urls)} shard(s) decoded ({dict(corrupt)})")
                if consumed <= skip:
                    continue
                rng = random.Random(_mix("augment", c.seed, epoch, consumer, consumed))
                result = self.decode(sample, rng)
                if isinstance(result, str):
                    corrupt[result] += 1
                    if sum(corrupt.values()) in (1, 10, 100, 1000) or sum(corrupt.values()) % 10000 == 0:
                        log.warning("skipping corrupt sample %s in %s (%s); %d skipped so far",
                                    sample.key, sample.shard, result, sum(corrupt.values()))
                    continue
                produced += 1
                pending.append((*result, sample.key))
                if len(pending) == c.batch_size:
                    yield self._collate(pending, worker, Position(epoch, consumed), corrupt)
                    pending = []
            if produced == 0 and skip == 0:
                raise DataError(f"reader {consumer} got no decodable sample in a whole pass over its shards "
                                f"{epoch_shards(c, epoch, consumer) if not c.resampled else c.urls}")
            epoch += 1
            skip = 0

    def _collate(self, items, worker: int, position: Position, corrupt: Counter) -> dict:
        pixels, texts, labels, keys = zip(*items)
        tokens = self.tokenizer(list(texts), padding="longest", truncation=True,
                                max_length=self.config.max_tokens, return_tensors="pt")
        return {
            "pixel_values": torch.stack(pixels),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.int64),
            "keys": list(keys),
            "texts": list(texts),
            "worker": worker,
            "position": [position.epoch, position.consumed],
            "corrupt": dict(corrupt),
        }


class Loader:
    """Batches for one rank with a resumable position (``state()``), over a torch DataLoader."""

    def __init__(self, config: DataConfig, tokenizer, state: StreamState | None = None) -> None:
        self.config = config
        self.start = state or StreamState()
        self.dataset = ShardStream(config, tokenizer, self.start)
        self.positions = dict(self.start.positions)
        self.next_worker = self.start.next_worker
        self.corrupt: dict[int, dict] = {}
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + Rust threads deadlock
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, num_workers=config.workers,
            persistent_workers=False, prefetch_factor=4 if config.workers else None,
        )

    def __iter__(self) -> Iterator[dict]:
        workers = max(1, self.config.workers)
        for batch in self.loader:
            worker = batch.pop("worker")
            epoch, consumed = batch.pop("position")
            self.positions[worker] = Position(int(epoch), int(consumed))
            self.corrupt[worker] = batch.pop("corrupt")
            self.next_worker = (worker + 1) % workers
            yield batch

    def state(self) -> StreamState:
        return StreamState(dict(self.positions), self.next_worker)

    def corrupt_counts(self) -> dict[str, int]:
        total: Counter = Counter()
        for counts in self.corrupt.values():
            total.update(counts)
        return dict(total)

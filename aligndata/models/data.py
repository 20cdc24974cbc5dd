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

Several shard sets (``sources``, UniCL's image-text + image-label mix): each consumer runs stages 1-3 once per set
(its own shard order, shuffle buffer and position; set 0 with exactly the seeds a single set uses) and fills
each sample slot from the set whose share is furthest behind its weight: after n samples, set s has given within
one sample of w_s * n of them (smooth weighted round robin: no random draw, so the rates hold in every batch, and
the choice is a function of the counts alone). Labels (UniCL's TargetM): a class of a
set with class names is the id of its name in the joint list of names (sets sharing a name share the class; a set's
text is then a random prompt of it); every other sample's label is its caption's (``losses.caption_label``:
identical captions share one, and a caption is never a class's label, even when it equals a class's prompt).

Position: each batch carries its consumer's (epoch, raw samples consumed in that epoch) per set and how many
samples each set has given. Resuming skips that many raw samples *before* decoding (cheap) and restarts the
DataLoader workers rotated so the next batch comes from the consumer whose turn it was: the resumed stream is
identical to the uninterrupted one.
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
class Source:
    """One shard set of a mix: its shards, its share of the samples, and its class names (line i = class i) with
    the joint label of each of its classes (None: the set's .cls ids are its labels, see SampleDecoder)."""

    urls: list[str]
    weight: float = 1.0
    classnames: list[str] | None = None
    class_labels: list[int] | None = None
    name: str = ""


def joint_classes(sources: list[Source]) -> list[str]:
    """Set every source's class_labels from the joint list of class names (first appearance, in set order), and
    return that list: sets whose classnames share a name share its label."""
    joint: dict[str, int] = {}
    for source in sources:
        if source.classnames is not None:
            source.class_labels = [joint.setdefault(name, len(joint)) for name in source.classnames]
    return list(joint)


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
    # Several shard sets mixed at their weights; None: the one set ``urls`` with ``classnames``.
    sources: list[Source] | None = None

    @property
    def consumers(self) -> int:
        return self.world_size * max(1, self.workers)

    def all_sources(self) -> list[Source]:
        if self.sources:
            return self.sources
        return [Source(self.urls, 1.0, self.classnames, None)]


@dataclass
class Position:
    """Where one consumer (rank, logical worker) stands: epoch and raw samples already consumed in it."""

    epoch: int = 0
    consumed: int = 0


@dataclass
class WorkerPosition:
    """One logical worker's place: a Position per shard set, and how many samples each set has given."""

    sources: list[Position] = field(default_factory=list)
    taken: list[int] = field(default_factory=list)

    def source(self, index: int) -> Position:
        return self.sources[index] if index < len(self.sources) else Position()

    def taken_from(self, index: int) -> int:
        return self.taken[index] if index < len(self.taken) else 0


@dataclass
class StreamState:
    """The resumable state of a rank's stream: per logical worker positions and whose batch comes next."""

    positions: dict[int, WorkerPosition] = field(default_factory=dict)
    next_worker: int = 0

    def to_dict(self) -> dict:
        return {"next_worker": self.next_worker,
                "positions": {str(w): [[p.epoch, p.consumed] for p in wp.sources] for w, wp in self.positions.items()},
                "taken": {str(w): list(wp.taken) for w, wp in self.positions.items()}}

    @classmethod
    def from_dict(cls, data: dict | None) -> "StreamState":
        if not data:
            return cls()
        taken = data.get("taken", {})
        positions = {}
        for w, value in data["positions"].items():
            # a checkpoint of one set before mixing existed holds [epoch, consumed]; now a list of those per set
            per_source = [value] if value and not isinstance(value[0], list) else value
            positions[int(w)] = WorkerPosition([Position(*v) for v in per_source], list(taken.get(w, [])))
        return cls(positions, int(data["next_worker"]))


def check_consumers(config: DataConfig) -> None:
    """Fail fast, with a fix, when the shards cannot be dealt to every rank and worker."""
    for source in config.all_sources():
        _check_consumers(config, source.urls, f" of {source.name}" if source.name else "")
    weights = [source.weight for source in config.all_sources()]
    if any(not w > 0 for w in weights):
        raise DataError(f"every shard set needs a weight > 0, got {weights}")


def _check_consumers(config: DataConfig, urls: list[str], what: str) -> None:
    if not config.resampled and len(urls) < config.consumers:
        raise DataError(
            f"{len(urls)} shard(s){what} cannot feed {config.world_size} rank(s) x {max(1, config.workers)} "
            f"worker(s) = {config.consumers} readers without some reading nothing; pass --resampled (draw shards "
            f"with replacement), lower --workers, or write more shards (curate --samples-per-shard)")


def _mix(*parts) -> str:
    return ":".join(str(p) for p in parts)


def _tag(source: int) -> tuple:
    """What a set adds to its random seeds: nothing for set 0 (a single set streams exactly as before mixing)."""
    return () if source == 0 else ("source", source)


def epoch_shards(config: DataConfig, epoch: int, consumer: int, source: int = 0) -> list[str]:
    order = list(config.all_sources()[source].urls)
    random.Random(_mix("shards", config.seed, epoch, *_tag(source))).shuffle(order)
    return order[consumer::config.consumers]


def next_source(weights: list[float], taken: list[int]) -> int:
    """The set whose share is furthest behind its weight (smooth weighted round robin; ties: the lower index)."""
    total, n = sum(weights), sum(taken) + 1
    deficits = [w / total * n - t for w, t in zip(weights, taken)]
    return max(range(len(weights)), key=lambda i: (deficits[i], -i))


RESAMPLED_GIVE_UP = 10_000  # consecutive undecodable samples before a resampled reader stops with an error


def _resampled_shards(config: DataConfig, consumer: int, seen_samples, source: int = 0) -> Iterator[str]:
    """Shards drawn with replacement, forever; raises if many draws yield no sample at all (all empty/unreadable),
    which would otherwise spin silently."""
    urls = config.all_sources()[source].urls
    rng = random.Random(_mix("resampled", config.seed, consumer, *_tag(source)))
    limit = max(100, 10 * len(urls))
    drawn = 0
    while True:
        drawn += 1
        if drawn > limit and not seen_samples():
            raise DataError(f"reader {consumer}: {limit} shard draws from {len(urls)} shard(s) gave no sample "
                            f"(empty or unreadable tars), e.g. {urls[0]}")
        yield urls[rng.randrange(len(urls))]


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

    def __call__(self, raw: Sample, rng: random.Random, source: Source | None = None,
                 index: int = 0) -> tuple[torch.Tensor, str, int] | str:
        c = self.config
        source = source or c.all_sources()[0]
        data = raw.image
        if data is None:
            return "missing_image"
        cls = raw.class_id
        if "cls" in raw.files and cls is None:
            return "bad_class"
        if cls is not None and source.classnames is not None:
            if cls >= len(source.classnames):
                return "class_out_of_range"
            text = rng.choice(c.templates).format(source.classnames[cls])
        else:
            text = raw.strict_text
            if text is None:
                return "missing_caption"
        try:
            pixels = self._pixels(raw, data, rng)
        except transforms.BadImage:
            return "bad_image"
        if cls is None:
            label = caption_label(text)
        elif source.class_labels is not None:
            label = source.class_labels[cls]
        elif index == 0:
            label = class_label(cls)
        else:  # a later set's classes without names: its own labels, never another set's class of the same id
            label = caption_label(f"\0set {index} class {cls}")
        return pixels, text, label

    def _pixels(self, raw: Sample, data: bytes, rng: random.Random) -> torch.Tensor:
        c = self.config
        if not c.augment:
            return transforms.eval_image(transforms.decode(data), c.image_size, c.resize_size)
        key = (raw.shard, raw.key)  # shard paths differ between sets
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
        start = self.state.positions.get(worker, WorkerPosition())
        sources = c.all_sources()
        corrupt: Counter = Counter()
        streams = [self._samples(i, consumer, start.source(i), corrupt) for i in range(len(sources))]
        weights = [source.weight for source in sources]
        taken = [start.taken_from(i) for i in range(len(sources))]
        positions = [start.source(i) for i in range(len(sources))]
        pending: list[tuple[torch.Tensor, str, int, str]] = []
        while True:
            index = next_source(weights, taken) if len(sources) > 1 else 0
            *item, positions[index] = next(streams[index])
            taken[index] += 1
            pending.append(tuple(item))
            if len(pending) == c.batch_size:
                yield self._collate(pending, worker, WorkerPosition(list(positions), list(taken)), corrupt)
                pending = []

    def _samples(self, index: int, consumer: int, start: Position, corrupt: Counter):
        """Set ``index``'s decoded samples for ``consumer``, epoch after epoch, each with its Position after it."""
        c = self.config
        source = c.all_sources()[index]
        tag = _tag(index)
        epoch = start.epoch
        skip = start.consumed
        while True:
            if c.resampled:
                shard_iter: Iterator[str] = _resampled_shards(c, consumer, lambda: consumed > 0, index)
            else:
                shard_iter = iter(epoch_shards(c, epoch, consumer, index))
            raw = reader.iter_shards(shard_iter, on_error=lambda url, exn: _shard_error(corrupt, url, exn))
            consumed = 0
            produced = 0
            buffer_rng = random.Random(_mix("buffer", c.seed, epoch, consumer, *tag))
            for sample in shuffled(raw, c.shuffle_buffer, buffer_rng):
                consumed += 1
                if c.resampled and produced == 0 and consumed - skip > RESAMPLED_GIVE_UP:
                    raise DataError(f"reader {consumer}: none of the first {RESAMPLED_GIVE_UP} samples drawn from "
                                    f"{len(source.urls)} shard(s) decoded ({dict(corrupt)})")
                if consumed <= skip:
                    continue
                rng = random.Random(_mix("augment", c.seed, epoch, consumer, consumed, *tag))
                result = self.decode(sample, rng, source, index)
                if isinstance(result, str):
                    corrupt[result] += 1
                    if sum(corrupt.values()) in (1, 10, 100, 1000) or sum(corrupt.values()) % 10000 == 0:
                        log.warning("skipping corrupt sample %s in %s (%s); %d skipped so far",
                                    sample.key, sample.shard, result, sum(corrupt.values()))
                    continue
                produced += 1
                yield (*result, sample.key, Position(epoch, consumed))
            if produced == 0 and skip == 0:
                raise DataError(f"reader {consumer} got no decodable sample in a whole pass over its shards "
                                f"{epoch_shards(c, epoch, consumer, index) if not c.resampled else source.urls}")
            epoch += 1
            skip = 0

    def _collate(self, items, worker: int, position: WorkerPosition, corrupt: Counter) -> dict:
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
            "position": [[[p.epoch, p.consumed] for p in position.sources], position.taken],
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
            sources, taken = batch.pop("position")
            self.positions[worker] = WorkerPosition([Position(int(e), int(n)) for e, n in sources],
                                                    [int(t) for t in taken])
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

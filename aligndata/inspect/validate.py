"""`inspect validate`: check a shard set against the output contract; list every problem with shard and key.

Checks, per tar: readable to the end (including the end-of-archive marker); no unsafe members (absolute names,
``..``, links, devices: reported, never followed); every sample has an image, a .txt and a .json; keys are
dot-free, unique across the whole set and their members adjacent; a .cls holds an integer; the .json is an
object whose ``caption`` equals the .txt and whose ``key``/``uid`` equal the key. Against the companion files:
``NAME.parquet``'s sample rows (``status == "success"``, or every row without a status column) have the same keys
and captions, and its failed rows (``--parquet-failed-rows``) have known statuses and are not in the tar;
``NAME_stats.json``'s ``successes`` is the tar's sample count, its ``count`` img2dataset's sum (successes +
failed_to_download + failed_to_resize, ``status_dict`` summing to it too) and its ``bytes`` the tar's size;
``sizes.json`` has the same count.
``--deep`` also decodes every image fully and checks its size against the .json's width/height.

A missing parquet or stats file is a problem only when other shards of the set have one: sets written by other
tools may legitimately have no companions at all.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import asdict, dataclass

import pyarrow.compute as pc
from PIL import Image

from aligndata.shards.contract import IMAGE_EXTS
from aligndata.shards.outcomes import STATUSES, SUCCESS, success_mask
from aligndata.shards.reader import Sample
from aligndata.inspect.scan import metadata_only, read_parquet, scan
from aligndata.shards.spec import ShardSet
from aligndata.filters.image import DEFAULT_MAX_PIXELS as MAX_PIXELS  # the curate default: refuse bombs here too



@dataclass(frozen=True)
class Problem:
    shard: str
    key: str | None
    problem: str

    def line(self) -> str:
        from aligndata.inspect.show import printable

        return f"{printable(self.shard)}\t{printable(self.key) if self.key else '-'}\t{printable(self.problem)}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _ShardFacts:
    count: int
    keys: list[str]
    captions: dict[str, str | None]


def small_shards(counts: dict[str, int], min_samples: int) -> list[str]:
    """Warnings for shards holding fewer than ``min_samples`` samples. Not a contract problem, but open_clip's
    webdataset loader (with its own resampling off) spins in its epoch loop when a worker's shards cannot fill one
    batch: pass batch size x workers per GPU."""
    return [f"{shard}: {n} sample(s), fewer than --min-samples {min_samples} (a batch per loader worker)"
            for shard, n in counts.items() if n < min_samples]


def validate(shards: ShardSet, deep: bool = False) -> tuple[list[Problem], dict]:
    """All problems found, and totals {"shards", "samples", "per_shard": {shard: samples}}."""
    problems: list[Problem] = []

    def report(shard: str, key: str | None, problem: str) -> None:
        problems.append(Problem(shard, key, problem))

    first_seen: dict[str, str] = {}  # key -> shard it was first seen in
    facts: dict[str, _ShardFacts] = {}
    samples = 0
    for path in shards.paths:
        shard = shards.name(path)
        keys, captions = [], {}
        for sample in scan(shards, want=None if deep else metadata_only, on_problem=report, check_end=True,
                           paths=[path]):
            samples += 1
            keys.append(sample.key)
            captions[sample.key] = _check_sample(sample, report, deep)
            if sample.key in first_seen and first_seen[sample.key] != shard:
                report(shard, sample.key, f"duplicate key: also in shard {first_seen[sample.key]}")
            first_seen.setdefault(sample.key, shard)
        facts[path] = _ShardFacts(len(keys), keys, captions)
    _check_companions(shards, facts, report)
    per_shard = {shards.name(path): fact.count for path, fact in facts.items()}
    return problems, {"shards": len(shards), "samples": samples, "per_shard": per_shard}


def _check_sample(sample: Sample, report, deep: bool) -> str | None:
    shard, key = sample.shard, sample.key
    image_exts = [ext for ext in sample.files if ext in IMAGE_EXTS]
    missing = [what for what, ok in (("image", image_exts), ("txt", "txt" in sample.files),
                                     ("json", "json" in sample.files)) if not ok]
    if missing:
        report(shard, key, f"sample lacks {' and '.join(missing)} (has {', '.join(sorted(sample.files)) or 'nothing'})")
    if len(image_exts) > 1:
        report(shard, key, f"sample has {len(image_exts)} images ({', '.join(image_exts)})")
    cls = sample.files.get("cls")
    if cls is not None and not re.fullmatch(rb"\s*-?\d+\s*", cls):
        report(shard, key, f".cls is not an integer: {_short(cls.decode('utf-8', 'replace'))!r}")
    text = None
    if "txt" in sample.files:
        try:
            text = sample.files["txt"].decode("utf-8")
        except UnicodeDecodeError as err:
            report(shard, key, f".txt is not UTF-8: {err}")
    meta = None
    if "json" in sample.files:
        meta = sample.meta
        if meta is None:
            report(shard, key, ".json is not a JSON object")
    if meta is not None:
        if text is not None and "caption" in meta and meta["caption"] != text:
            report(shard, key, f".json caption {_short(meta['caption'])!r} differs from .txt {_short(text)!r}")
        for field in ("key", "uid"):
            if field in meta and meta[field] != key:
                report(shard, key, f".json {field} {_short(meta[field])!r} differs from the member key")
    if deep and image_exts:
        _check_image(sample, meta, report)
    return text


def _check_image(sample: Sample, meta: dict | None, report) -> None:
    data = sample.image
    if data is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
                img.load()
                size = img.size
    except Exception as err:  # any decoder failure is the finding itself
        report(sample.shard, sample.key, f"image does not decode: {type(err).__name__}: {err}")
        return
    if meta and isinstance(meta.get("width"), int) and isinstance(meta.get("height"), int):
        if (meta["width"], meta["height"]) != size:
            report(sample.shard, sample.key,
                    f"image is {size[0]}x{size[1]} but .json says {meta['width']}x{meta['height']}")


def _short(value, n: int = 60):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _check_companions(shards: ShardSet, facts: dict[str, _ShardFacts], report) -> None:
    have_parquet = {p: shards.exists(shards.companion(p, ".parquet")) for p in shards.paths}
    have_stats = {p: shards.exists(shards.companion(p, "_stats.json")) for p in shards.paths}
    for path in shards.paths:
        shard, fact = shards.name(path), facts[path]
        failed_rows = None
        if have_parquet[path]:
            failed_rows = _check_parquet(shards, path, shard, fact, report)
        elif any(have_parquet.values()):
            report(shard, None, f"{shards.stem(path)}.parquet is missing (other shards have one)")
        if have_stats[path]:
            _check_stats(shards, path, shard, fact, failed_rows, report)
        elif any(have_stats.values()):
            report(shard, None, f"{shards.stem(path)}_stats.json is missing (other shards have one)")
    _check_sizes(shards, facts, report)


def _check_parquet(shards, path, shard, fact: _ShardFacts, report) -> int | None:
    """Check the parquet's rows against the tar; return how many failed rows it lists (None: unreadable)."""
    name = f"{shards.stem(path)}.parquet"
    try:
        table = read_parquet(shards, path, samples_only=False)
    except ValueError as err:
        report(shard, None, str(err))
        return None
    try:
        mask = success_mask(table)
    except ValueError as err:
        report(shard, None, f"{name}: {err}")
        return None
    samples = table if mask is None else table.filter(mask)
    failed = None if mask is None else table.filter(pc.invert(mask))
    if samples.num_rows != fact.count:
        report(shard, None, f"{name} has {samples.num_rows} sample rows, the tar {fact.count} samples")
    if "key" not in table.column_names:
        report(shard, None, f"{name} has no key column")
        return None
    pkeys = samples.column("key").to_pylist()
    captions = samples.column("caption").to_pylist() if "caption" in samples.column_names else [None] * len(pkeys)
    tar_keys = set(fact.keys)
    for key, caption in zip(pkeys, captions):
        if key not in tar_keys:
            report(shard, key, f"in {name} but not in the tar")
        elif caption is not None and fact.captions.get(key) is not None and caption != fact.captions[key]:
            report(shard, key, f"{name} caption {_short(caption)!r} differs from .txt {_short(fact.captions[key])!r}")
    for key in sorted(tar_keys - set(pkeys)):
        report(shard, key, f"in the tar but not in {name}")
    if failed is None:
        return 0
    for key, status in zip(failed.column("key").to_pylist(), failed.column("status").to_pylist()):
        if status not in STATUSES:
            report(shard, key, f"{name} status {_short(status)!r} is none of {', '.join(STATUSES)}")
        elif key in tar_keys:
            report(shard, key, f"{name} says {status} but the sample is in the tar")
    return failed.num_rows


def _check_stats(shards, path, shard, fact: _ShardFacts, failed_rows: int | None, report) -> None:
    name = f"{shards.stem(path)}_stats.json"
    try:
        stats = shards.read_json(shards.companion(path, "_stats.json"))
    except ValueError as err:
        report(shard, None, str(err))
        return
    if not isinstance(stats, dict):
        report(shard, None, f"{name} is not a JSON object")
        return
    if "successes" in stats and stats["successes"] != fact.count:
        report(shard, None, f"{name} says successes {stats['successes']!r}, the tar has {fact.count} samples")
    if "bytes" in stats and stats["bytes"] != shards.size(path):
        report(shard, None, f"{name} says {stats['bytes']!r} bytes, the tar is {shards.size(path)} bytes")
    if "count" not in stats:
        return
    count = stats["count"]
    parts = [stats.get(field) for field in ("successes", "failed_to_download", "failed_to_resize")]
    if "failed_to_download" not in stats and "failed_to_resize" not in stats:  # older aligndata, other tools
        if count != fact.count:
            report(shard, None, f"{name} says count {count!r}, the tar has {fact.count} samples")
    elif not all(isinstance(n, int) for n in parts) or count != sum(parts):
        report(shard, None, f"{name} says count {count!r}, not successes + failed_to_download + "
                            f"failed_to_resize ({' + '.join(map(repr, parts))})")
    status_dict = stats.get("status_dict")
    if isinstance(status_dict, dict):
        total = sum(n for n in status_dict.values() if isinstance(n, int))
        if total != count:
            report(shard, None, f"{name}'s status_dict counts {total} rows, its count {count!r}")
        if status_dict.get(SUCCESS, 0) != fact.count:
            report(shard, None, f"{name}'s status_dict says {status_dict.get(SUCCESS, 0)!r} successes, the tar has "
                                f"{fact.count} samples")
    if failed_rows and isinstance(count, int) and failed_rows != count - fact.count:
        report(shard, None, f"{shards.stem(path)}.parquet lists {failed_rows} failed rows, {name} counts "
                            f"{count - fact.count}")


def _check_sizes(shards: ShardSet, facts: dict[str, _ShardFacts], report) -> None:
    for sizes_path in {shards.sizes_json(p) for p in shards.paths}:
        try:
            sizes = shards.read_json(sizes_path)
        except ValueError as err:
            report("sizes.json", None, str(err))
            continue
        if sizes is None:
            continue
        if not isinstance(sizes, dict):
            report("sizes.json", None, f"{sizes_path} is not a JSON object")
            continue
        directory = shards.parent(sizes_path)
        for path in shards.paths:
            if shards.sizes_json(path) != sizes_path:
                continue
            tar_name = shards.basename(path)
            if tar_name not in sizes:
                report(shards.name(path), None, f"sizes.json has no entry for {tar_name}")
            elif sizes[tar_name] != facts[path].count:
                report(shards.name(path), None,
                       f"sizes.json says {sizes[tar_name]!r} samples, the tar has {facts[path].count}")
        for tar_name in sorted(sizes):
            if not shards.exists(shards.join(directory, str(tar_name))):
                report("sizes.json", None, f"sizes.json lists {tar_name}, which does not exist")

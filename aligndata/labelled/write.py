"""`aligndata shards-from-labels`: labelled image files -> WebDataset shards in the output contract, with ``.cls``.

One deterministic pass, no Beam (there is no corpus statistic to compute; every file is judged on its own):

1. list the files (``labelled.listing``); give each its uid = sha256(name + "\\t" + class name)[:32], curate's
   key rule with the file's name as the url; a repeated (name, label) of a CSV is a ``duplicate_pair``;
2. take the files in uid order (a hash order, so classes are mixed across and within shards, where a walk order
   would put each class in its own shards) and read + decode + check + resize + encode each with curate's own
   per-image chain (``images.process.process_image``: pixel bombs, modes, EXIF orientation, size rules), in a
   pool of ``processes`` when asked, always in that order;
3. the kept samples fill shards of ``samples_per_shard`` in that order: ``NAME.tar`` (image, ``.cls``, ``.json``,
   ``.txt`` = the class name), ``NAME.parquet``, ``NAME_stats.json`` (shards.writer, as curate writes them);
   then ``sizes.json``, ``classnames.txt`` (line i = class i), ``rejected/`` (one row per file that did not
   become a sample, with curate's ledger columns and a reason), ``report.json`` and ``config.json``.

Same files and options -> byte-identical output, whatever ``processes``. Memory: the file list (a few hundred
bytes per file), one shard's encoded images, one window of in-flight images per process, and the rejected rows.
A run that keeps nothing writes its ledger and report, then fails with InputError (exit 2).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import get_context

import pyarrow as pa

from aligndata import __version__
from aligndata.filters import reasons
from aligndata.images.process import ImageConfig, ImageOutcome, process_image
from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.io.inputs import InputError
from aligndata.labelled.listing import LabelledFile, Listing, list_csv, list_image_folder
from aligndata.progress_bar import progress_bar
from aligndata.shards.contract import CLASSNAMES, REJECTED, ledger_part_name, make_uid
from aligndata.shards.names import DEFAULT_SHARD_DIGITS
from aligndata.shards.writer import Sample, parquet_bytes, prepare_output_dir, write_shard, write_sizes

# Reasons of this command's ledger besides curate's image reasons (decode_failed, image_too_small, ...) and its
# invalid_row / duplicate_pair: the file is not there, cannot be read, or is larger than --max-file-bytes.
FILE_MISSING = "file_missing"
FILE_UNREADABLE = "file_unreadable"
FILE_TOO_LARGE = "file_too_large"

# curate's rejected-ledger columns (pipeline/ledger.py: REJECTED_SCHEMA), so `aligndata inspect rejected` reads it
REJECTED_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()),
                             ("reason", pa.string()), ("detail", pa.string()), ("source_file", pa.string()),
                             ("source_row", pa.int64())])
CLASS_COLUMN = {"cls": pa.int64()}  # the class id in every shard's parquet, after the contract's columns
WINDOW_PER_PROCESS = 32  # images in flight per process


@dataclass
class LabelsConfig:
    output: str
    images: str | None = None  # an ImageFolder root ...
    csv: str | None = None  # ... or a CSV of path,label
    root: str | None = None  # the CSV's relative paths are relative to this (default: its directory)
    samples_per_shard: int = 10_000
    shard_digits: int = DEFAULT_SHARD_DIGITS
    processes: int = 1
    max_file_bytes: int = 64 << 20
    # the per-image chain: curate's output options; its size rules are off by default (labelled sets are
    # curated already; ALIGN's > 200 px rule is for web images), --min-side / --max-aspect-ratio turn them on
    image_size: int = 346
    resize_mode: str = "keep_ratio"
    resize_filter: str = "area"
    encode_format: str = "jpg"
    encode_quality: int = 95
    max_pixels: int = ImageConfig.max_pixels
    min_side: int = 0
    max_aspect_ratio: float | None = None
    overwrite: bool = False
    progress: bool = False

    def image_config(self) -> ImageConfig:
        return ImageConfig(min_side=self.min_side, max_aspect_ratio=self.max_aspect_ratio or math.inf,
                           resize_mode=self.resize_mode, image_size=self.image_size,
                           encode_format=self.encode_format, encode_quality=self.encode_quality,
                           max_pixels=self.max_pixels, resample=self.resize_filter)


def read_and_process(job: tuple[str, int, ImageConfig]) -> tuple[str, str, ImageOutcome | None]:
    """(reason, detail, outcome) for one file: its bytes through curate's per-image chain. Never raises for a
    bad file; runs in a pool process."""
    path, max_bytes, cfg = job
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return FILE_TOO_LARGE, f"{size} bytes", None
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return FILE_MISSING, "no such file", None
    except OSError as err:
        return FILE_UNREADABLE, type(err).__name__ + (f": {err.strerror}" if err.strerror else ""), None
    if len(data) > max_bytes:  # grew since the stat
        return FILE_TOO_LARGE, f"> {max_bytes} bytes", None
    outcome = process_image(data, cfg)
    return (outcome.reason or "", outcome.detail, outcome)


def _outcomes(jobs: list[tuple], processes: int):
    """read_and_process over ``jobs`` in order, in windows (bounded memory), in a pool when processes > 1."""
    if processes <= 1:
        yield from map(read_and_process, jobs)
        return
    window = processes * WINDOW_PER_PROCESS
    with get_context("spawn").Pool(processes) as pool:  # spawn: no forked copy of the caller's threads/locks
        for start in range(0, len(jobs), window):
            yield from pool.map(read_and_process, jobs[start:start + window], chunksize=4)


def sample_meta(item: LabelledFile, uid: str, cls: int, outcome: ImageOutcome) -> dict:
    """The .json: the contract's fields (url = the file's name, caption = the class name), the class id, and the
    CSV's other columns."""
    meta = dict(item.extra)
    meta.update(key=uid, uid=uid, url=item.name, caption=item.label, page_url=None, cls=cls,
                width=outcome.width, height=outcome.height, original_width=outcome.original_width,
                original_height=outcome.original_height, sha256=outcome.sha256, phash=outcome.phash)
    return meta


class _Shards:
    """Kept samples into consecutive shards of ``per_shard``."""

    def __init__(self, cfg: LabelsConfig) -> None:
        self.cfg, self.pending, self.sizes, self.stats = cfg, [], {}, []

    def add(self, sample: Sample) -> None:
        self.pending.append(sample)
        if len(self.pending) == self.cfg.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        stats = write_shard(self.cfg.output, len(self.stats), self.pending, digits=self.cfg.shard_digits,
                            typed=CLASS_COLUMN)
        self.stats.append(stats)
        self.sizes[f"{stats['shard']}.tar"] = stats["successes"]
        self.pending = []


def shards_from_labels(cfg: LabelsConfig) -> dict:
    """Write the shards, ledger and report; return the report. Raises InputError for what the user must fix
    (no input, bad CSV, nothing readable)."""
    if (cfg.images is None) == (cfg.csv is None):
        raise InputError("give exactly one of --images ROOT and --csv FILE")
    image_cfg = _image_config(cfg)
    listing = list_image_folder(cfg.images) if cfg.images is not None else list_csv(cfg.csv, cfg.root)
    if not listing.files:
        raise InputError(f"--images {cfg.images}: no image files under its class directories "
                         f"({listing.other_files} other files)")
    prepare_output_dir(cfg.output, cfg.overwrite, cfg.shard_digits)
    started = time.monotonic()
    class_id = {name: i for i, name in enumerate(listing.classes)}
    rejected: list[dict] = []
    reasons_seen: Counter = Counter()
    per_class: Counter = Counter()

    def reject(item: LabelledFile, uid: str, reason: str, detail: str) -> None:
        reasons_seen[reason] += 1
        rejected.append({"uid": uid, "url": item.name, "caption": item.label, "reason": reason, "detail": detail,
                         "source_file": item.source_file, "source_row": item.source_row})

    todo: list[tuple[str, LabelledFile]] = []
    seen: set[str] = set()
    for item in listing.files:
        uid = make_uid(item.name, item.label)
        if item.invalid:
            reject(item, uid, reasons.INVALID_ROW, item.invalid)
        elif uid in seen:
            reject(item, uid, reasons.DUPLICATE_PAIR, "the same path and label on an earlier row")
        else:
            seen.add(uid)
            todo.append((uid, item))
    todo.sort(key=lambda pair: pair[0])
    shards = _Shards(cfg)
    bar = progress_bar(len(todo), unit="img", desc="shards-from-labels") if cfg.progress else None
    jobs = [(item.path, cfg.max_file_bytes, image_cfg) for _, item in todo]
    for (uid, item), (reason, detail, outcome) in zip(todo, _outcomes(jobs, cfg.processes)):
        if bar is not None:
            bar.update(1)
        if reason:
            reject(item, uid, reason, detail)
            continue
        cls = class_id[item.label]
        per_class[item.label] += 1
        shards.add(Sample(key=uid, image=outcome.image_bytes, image_ext=outcome.ext, text=item.label,
                          meta=sample_meta(item, uid, cls, outcome), cls=cls))
    shards.flush()
    if bar is not None:
        bar.close()
    write_sizes(cfg.output, shards.sizes)
    write_bytes_atomic(os.path.join(cfg.output, CLASSNAMES), "".join(f"{n}\n" for n in listing.classes).encode())
    _write_ledger(cfg.output, rejected)
    report = _report(cfg, listing, shards, reasons_seen, per_class, time.monotonic() - started)
    write_json_atomic(os.path.join(cfg.output, "report.json"), report)
    write_json_atomic(os.path.join(cfg.output, "config.json"), {"options": asdict(cfg), "version": __version__})
    if not shards.sizes:
        raise InputError(f"read no usable image: all {len(listing.files)} files were rejected "
                         f"({_reason_text(reasons_seen)}); see {os.path.join(cfg.output, REJECTED)}/")
    return report


def _image_config(cfg: LabelsConfig) -> ImageConfig:
    if cfg.samples_per_shard < 1 or cfg.processes < 1 or cfg.max_file_bytes < 1:
        raise InputError("--samples-per-shard, --processes and --max-file-bytes must be >= 1")
    try:
        return cfg.image_config()
    except ValueError as err:
        raise InputError(str(err)) from None


def _reason_text(counts: Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.most_common())


def _write_ledger(output: str, rows: list[dict]) -> None:
    """rejected/part-00000-of-00001.parquet, rows in listing order (an empty part when nothing was rejected, so
    readers find the schema, as curate does)."""
    rows = sorted(rows, key=lambda r: (r["source_file"], r["source_row"]))
    columns = {name: [row[name] for row in rows] for name in REJECTED_SCHEMA.names}
    table = pa.table(columns, schema=REJECTED_SCHEMA)
    os.makedirs(os.path.join(output, REJECTED), exist_ok=True)
    write_bytes_atomic(os.path.join(output, REJECTED, ledger_part_name(0, 1)), parquet_bytes(table))


def _report(cfg, listing: Listing, shards: _Shards, reasons_seen: Counter, per_class: Counter,
            seconds: float) -> dict:
    kept = sum(shards.sizes.values())
    return {
        "command": "shards-from-labels",
        "source": {"images": cfg.images} if cfg.images is not None else {"csv": cfg.csv},
        "input_files": len(listing.files),
        "kept": kept,
        "rejected": dict(sorted(reasons_seen.items())),
        "accounting_ok": len(listing.files) == kept + sum(reasons_seen.values()),
        "classes": len(listing.classes),
        "samples_per_class": {name: per_class[name] for name in listing.classes},
        "empty_classes": listing.empty_classes,
        "classes_without_samples": [name for name in listing.classes if not per_class[name]],
        "not_images": {"files": listing.other_files, "examples": listing.other_examples},
        "shards": len(shards.sizes),
        "seconds": round(seconds, 2),
    }


def summary_line(report: dict, output: str) -> str:
    rejected = sum(report["rejected"].values())
    return (f"{report['kept']} samples of {report['classes']} classes in {report['shards']} shard(s) at {output}; "
            f"{rejected} file(s) rejected" + (f" ({_reason_text(Counter(report['rejected']))})" if rejected else "")
            + (f"; {report['not_images']['files']} non-image file(s) not read" if report["not_images"]["files"]
               else ""))

"""Eval-set index files: build one from eval images, and load it for `curate --eval-index`.

Inputs (``--images``, repeatable): a directory (every image file under it, recursively), a glob (quote it),
or WebDataset shards (``.tar``, e.g. our own output). Ids: a file's path relative to the directory given (for a
glob, relative to the glob's directory part), a shard member's key (the name before the first dot), each
optionally prefixed (``--id-prefix coco/``). Every image is hashed as decoded (EXIF-oriented RGB, the same
``decode_image`` the pipeline uses) and mirrored.

File format (version 1): an uncompressed ``.npz`` (zip of .npy arrays; loads with ``allow_pickle=False``, no
code runs on load):

    format         uint8   b"aligndata-eval-index"
    meta           uint8   UTF-8 JSON: version, hash_kind, hash_size, bits, count, mirrored, aligndata_version,
                           sources, skipped
    hashes         uint64  (n, W) hash of each eval image, W = ceil(bits / 64), big-endian words, left-aligned
    mirror_hashes  uint64  (n, W) hash of its left-right mirror
    ids_blob       uint8   UTF-8 ids concatenated
    id_offsets     int64   (n + 1) id i is ids_blob[id_offsets[i]:id_offsets[i+1]]

200k eval images take 200k x (8 + 8) bytes of hashes plus their ids (~6 MB with 20-char ids).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aligndata import __version__
from aligndata.filters.dedup import EvalHashes, HashSpec, encode_ids, hashes_to_array
from aligndata.filters.image import DecodeError, decode_image
from aligndata.io.atomic import write_bytes_atomic
from aligndata.io.storage import storage_for

FORMAT = b"aligndata-eval-index"
VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")
_GLOB_CHARS = "*?["


class EvalIndexError(Exception):
    """A problem with eval images or an index file; the message names the path and is shown without a traceback."""


# -------------------------------------------------------------------------------------------------- inputs


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard ("data/*/val/*.jpg" -> "data")."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next((i for i, p in enumerate(parts) if any(c in p for c in _GLOB_CHARS)),
                                      len(parts))]]
    return str(Path(*fixed)) if fixed else "."


def list_sources(specs: list[str]) -> list[tuple[str, str]]:
    """Each ``--images`` value -> [(path, id base)]: image files and .tar shards, sorted within a spec."""
    found: list[tuple[str, str]] = []
    for spec in specs:
        if any(c in spec for c in _GLOB_CHARS):
            root = _glob_root(spec)
            paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not paths:
                raise EvalIndexError(f"--images {spec}: the glob matches no file")
        elif os.path.isdir(spec):
            root = spec
            paths = sorted(
                os.path.join(d, f) for d, _, files in os.walk(spec) for f in files if _is_image(f) or f.endswith(".tar")
            )
            if not paths:
                raise EvalIndexError(f"--images {spec}: no image files or .tar shards in this directory")
        elif os.path.isfile(spec):
            root = os.path.dirname(spec) or "."
            paths = [spec]
        else:
            raise EvalIndexError(f"--images {spec}: no such file or directory")
        for path in paths:
            if path.endswith(".tar") or _is_image(path):
                found.append((path, Path(os.path.relpath(path, root)).as_posix()))
    return found


def iter_images(sources: list[tuple[str, str]], id_prefix: str = "") -> Iterator[tuple[str, str, str | bytes]]:
    """(id, where, path-or-bytes) for every eval image; shard members are read here, files in the workers."""
    for path, rel in sources:
        if not path.endswith(".tar"):
            yield id_prefix + rel, path, path
            continue
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile() and _is_image(member.name):
                        key = os.path.basename(member.name).split(".", 1)[0]
                        data = tar.extractfile(member).read()
                        yield id_prefix + key, f"{path}:{member.name}", data
        except (tarfile.TarError, OSError) as err:
            raise EvalIndexError(f"--images {path}: cannot read the tar shard: {err}") from err


def _hash_one(task: tuple[str, str, str | bytes, str, int]) -> tuple[str, str, int | None, int | None, str]:
    image_id, where, source, kind, size = task
    spec = HashSpec(kind, size)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        image = decode_image(data).image
        original, mirror = spec.hash_with_mirror(image)
        return image_id, where, original, mirror, ""
    except DecodeError as err:
        return image_id, where, None, None, err.detail
    except OSError as err:
        return image_id, where, None, None, f"unreadable:{type(err).__name__}"


# -------------------------------------------------------------------------------------------------- build

_BATCH = 512  # tasks in flight: Executor.map would submit (and hold the bytes of) every shard member at once


def _map_bounded(pool, tasks):
    if pool is None:
        yield from map(_hash_one, tasks)
        return
    batch = []
    for task in tasks:
        batch.append(task)
        if len(batch) == _BATCH:
            yield from pool.map(_hash_one, batch, chunksize=16)
            batch = []
    if batch:
        yield from pool.map(_hash_one, batch, chunksize=16)



@dataclass
class BuildResult:
    path: str
    count: int
    skipped: dict[str, str] = field(default_factory=dict)  # where -> why (decode detail)
    seconds: float = 0.0
    bytes: int = 0


def build_index(specs: list[str], output: str, spec: HashSpec = HashSpec(), id_prefix: str = "",
                workers: int | None = None) -> BuildResult:
    """Hash every eval image found by ``specs`` (and its mirror) and write the index file to ``output``."""
    started = time.perf_counter()
    sources = list_sources(specs)
    tasks = ((i, w, s, spec.kind, spec.size) for i, w, s in iter_images(sources, id_prefix))
    ids: list[str] = []
    hashes: list[int] = []
    mirrors: list[int] = []
    seen: dict[str, str] = {}
    skipped: dict[str, str] = {}
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    results = _map_bounded(pool, tasks)
    try:
        for image_id, where, original, mirror, why in results:
            if original is None:
                skipped[where] = why
                continue
            if image_id in seen:
                raise EvalIndexError(f"duplicate eval image id {image_id!r}: {seen[image_id]} and {where} "
                                     "(use --id-prefix per source to keep them apart)")
            seen[image_id] = where
            ids.append(image_id)
            hashes.append(original)
            mirrors.append(mirror)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not ids:
        raise EvalIndexError(f"no decodable eval image in {', '.join(specs)} ({len(skipped)} skipped)")
    meta = {
        "version": VERSION, "hash_kind": spec.kind, "hash_size": spec.size, "bits": spec.bits, "count": len(ids),
        "mirrored": True, "aligndata_version": __version__, "sources": list(specs), "skipped": len(skipped),
    }
    size = write_index(output, meta, ids, hashes_to_array(hashes, spec.bits), hashes_to_array(mirrors, spec.bits))
    return BuildResult(output, len(ids), skipped, time.perf_counter() - started, size)


def write_index(output: str, meta: dict, ids: list[str], hashes: np.ndarray, mirror_hashes: np.ndarray) -> int:
    blob, offsets = encode_ids(ids)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.frombuffer(FORMAT, dtype=np.uint8),
        meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8),
        hashes=hashes,
        mirror_hashes=mirror_hashes,
        ids_blob=np.frombuffer(blob, dtype=np.uint8),
        id_offsets=offsets,
    )
    data = buffer.getvalue()
    write_bytes_atomic(output, data)  # never a half-written index under the final name
    return len(data)


# --------------------------------------------------------------------------------------------------- load


def _read_bytes(path: str) -> bytes:
    try:
        with storage_for(path).open_read(path) as f:
            return f.read()
    except Exception as err:  # FileNotFoundError, a cloud filesystem's own errors
        raise EvalIndexError(f"--eval-index {path}: cannot read: {err}") from err


def read_index(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of an index file; EvalIndexError naming the file if it is not a readable version-1 index."""
    data = _read_bytes(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, ...
        raise EvalIndexError(f"--eval-index {path}: not an eval index file (build one with "
                             f"`aligndata eval-index build`): {err}") from err
    if "format" not in arrays or arrays["format"].tobytes() != FORMAT:
        raise EvalIndexError(f"--eval-index {path}: not an aligndata eval index (no format marker)")
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    if meta.get("version") != VERSION:
        raise EvalIndexError(f"--eval-index {path}: format version {meta.get('version')} is not supported "
                             f"(this aligndata reads version {VERSION}); rebuild it")
    missing = {"hashes", "mirror_hashes", "ids_blob", "id_offsets"} - arrays.keys()
    if missing:
        raise EvalIndexError(f"--eval-index {path}: damaged, missing {', '.join(sorted(missing))}")
    return meta, arrays


def load_index(path: str, radius: int, substrings: int | None = None) -> EvalHashes:
    """Load an index file, searchable within Hamming distance ``radius``."""
    meta, arrays = read_index(path)
    spec = HashSpec(meta["hash_kind"], meta["hash_size"])
    if not 0 <= radius <= spec.bits:
        raise EvalIndexError(f"--eval-hamming {radius} is outside 0..{spec.bits} for this {spec.bits}-bit index")
    try:
        return EvalHashes(spec, arrays["ids_blob"].tobytes(), arrays["id_offsets"], arrays["hashes"],
                          arrays["mirror_hashes"], radius, substrings)
    except ValueError as err:
        raise EvalIndexError(f"--eval-index {path}: damaged: {err}") from err

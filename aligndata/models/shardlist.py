"""Resolve a SHARDS argument to a list of tar URLs, and read how many samples each holds.

SHARDS may be a directory (every ``*.tar`` directly in it), a glob (``out/0000*.tar``), a brace pattern
(``out/{00000..00009}.tar``), an fsspec URL of any of these (``s3://bucket/out/``, ``gs://b/{00000..00003}.tar``),
or several of these joined with ``::`` (webdataset's convention). The result is sorted within each part and free of
duplicates, so every rank and worker sees the same list in the same order.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
from webdataset.shardlists import expand_urls


class ShardError(Exception):
    """SHARDS names no readable shard, or shards are inconsistent (bad sizes.json)."""


def _strip_protocol(fs, path: str) -> str:
    return fs._strip_protocol(path)


def _with_protocol(fs, path: str, original: str) -> str:
    """Give back a URL in the user's scheme (``s3://...``) for a path fsspec listed without it."""
    if "://" in original:
        protocol = original.split("://", 1)[0]
        return path if path.startswith(protocol + "://") else f"{protocol}://{path}"
    return path


def resolve_shards(spec: str) -> list[str]:
    """Every tar URL named by ``spec``; raises ShardError naming the part that matched nothing."""
    if not spec or not spec.strip():
        raise ShardError("no shards given (empty SHARDS)")
    urls: list[str] = []
    for part in spec.split("::"):
        urls.extend(_resolve_part(part))
    seen: set[str] = set()
    unique = [u for u in urls if not (u in seen or seen.add(u))]
    if not unique:
        raise ShardError(f"no .tar shards found in {spec!r}")
    return unique


def _resolve_part(part: str) -> list[str]:
    fs, _ = fsspec.core.url_to_fs(part)
    if "{" in part and ".." in part:
        expanded = expand_urls(part)
        missing = [u for u in expanded if not fs.exists(_strip_protocol(fs, u))]
        if missing:
            raise ShardError(f"{len(missing)} of {len(expanded)} shards in {part!r} do not exist, e.g. {missing[0]}")
        return expanded
    if any(ch in part for ch in "*?["):
        found = sorted(p for p in fs.glob(_strip_protocol(fs, part)) if p.endswith(".tar"))
        if not found:
            raise ShardError(f"the pattern {part!r} matches no .tar file")
        return [_with_protocol(fs, p, part) for p in found]
    path = _strip_protocol(fs, part)
    if fs.isdir(path):
        found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".tar"))
        if not found:
            raise ShardError(f"the directory {part!r} holds no .tar shards")
        return [_with_protocol(fs, p, part) for p in found]
    if fs.exists(path):
        return [part]
    raise ShardError(f"shards {part!r} do not exist (give a directory, glob, {{00000..00009}}.tar pattern or URL)")


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def shard_sizes(urls: list[str]) -> dict[str, int | None]:
    """Samples per shard from the ``sizes.json`` beside each shard (None where it is missing or silent)."""
    sizes: dict[str, int | None] = {}
    cache: dict[str, dict] = {}
    for url in urls:
        parent = _parent(url)
        if parent not in cache:
            cache[parent] = _read_sizes(parent)
        sizes[url] = cache[parent].get(posixpath.basename(url))
    return sizes


def _read_sizes(parent: str) -> dict:
    path = f"{parent}/sizes.json"
    fs, local = fsspec.core.url_to_fs(path)
    if not fs.exists(local):
        return {}
    try:
        with fs.open(local, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: cannot read sizes ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
        raise ShardError(f"{path}: expected {{\"00000.tar\": count, ...}} with non-negative integer counts")
    return data


def total_samples(urls: list[str]) -> int | None:
    """Sum of sizes.json counts over ``urls``; None when any shard's count is unknown."""
    sizes = shard_sizes(urls)
    if any(v is None for v in sizes.values()):
        return None
    return sum(sizes.values())  # type: ignore[arg-type]

"""Resolve SHARDS (a directory, a glob, a brace pattern or a URL) to an ordered list of tar files.

* directory: every ``*.tar`` directly inside it (``dir/``, ``gs://bucket/shards``)
* glob: ``shards/*.tar``, ``gs://bucket/shards/0000?.tar``
* brace pattern (webdataset's notation): ``shards/{00000..00099}.tar``, ``{a,b}.tar``; every expanded name must
  exist, so a typo in the range is an error rather than a silently smaller set
* a single ``.tar`` path or URL

Companion files sit beside each tar: ``NAME.parquet``, ``NAME_stats.json`` and the directory's ``sizes.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import braceexpand

from aligndata.io.storage import StorageError, storage_for, strip_file_scheme

_GLOB_CHARS = set("*?[")


class ShardSetError(Exception):
    """SHARDS names nothing usable (message says what was tried)."""


@dataclass
class ShardSet:
    spec: str
    paths: list[str]
    storage: object = field(repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def stem(self, path: str) -> str:
        """``dir/00000.tar`` -> ``00000``."""
        base = self.storage.basename(path)
        return base[: -len(".tar")] if base.endswith(".tar") else base

    def name(self, path: str) -> str:
        """The shard's label in every message: its stem, or its full path when two shards share a stem."""
        stems = [self.stem(p) for p in self.paths]
        stem = self.stem(path)
        return stem if stems.count(stem) <= 1 else path

    def companion(self, path: str, suffix: str) -> str:
        """``dir/00000.tar`` + ``.parquet`` -> ``dir/00000.parquet``."""
        return self.storage.join(self.storage.parent(path), self.stem(path) + suffix)

    def sizes_json(self, path: str) -> str:
        return self.storage.join(self.storage.parent(path), "sizes.json")

    def open(self, path: str):
        return self.storage.open_read(path)

    def exists(self, path: str) -> bool:
        return self.storage.exists(path)

    def size(self, path: str) -> int:
        return self.storage.size(path)

    def read_json(self, path: str):
        """Parsed JSON, or None when the file is absent; a broken file raises ValueError naming it."""
        if not self.storage.exists(path):
            return None
        with self.storage.open_read(path) as f:
            raw = f.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err

    def sizes(self) -> dict[str, dict]:
        """sizes.json of every directory the set spans: {sizes_json_path: {tar name: count}} (absent ones omitted)."""
        out = {}
        for path in self.paths:
            sj = self.sizes_json(path)
            if sj not in out:
                out[sj] = self.read_json(sj)
        return {k: v for k, v in out.items() if v is not None}


def resolve(spec: str) -> ShardSet:
    if not spec:
        raise ShardSetError("SHARDS is empty: give a directory, a glob, a brace pattern or a .tar path")
    spec = strip_file_scheme(spec)
    try:
        storage = storage_for(spec)
        paths = _expand(spec, storage)
    except StorageError as err:
        raise ShardSetError(str(err)) from err
    except OSError as err:
        raise ShardSetError(f"cannot list {spec}: {err}") from err
    if not paths:
        raise ShardSetError(f"no .tar shards found at {spec}")
    return ShardSet(spec, paths, storage)


def _expand(spec: str, storage) -> list[str]:
    if "{" in spec and "}" in spec:
        names = list(braceexpand.braceexpand(spec))
        missing = [n for n in names if not storage.exists(n)]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise ShardSetError(f"{spec}: {len(missing)} of {len(names)} shards do not exist, e.g. "
                                f"{', '.join(missing[:3])}{more}")
        return _dedupe(names)
    if _GLOB_CHARS & set(spec):
        return [p for p in storage.glob(spec) if p.endswith(".tar")] or storage.glob(spec)
    if storage.isdir(spec):
        return storage.glob(storage.join(spec.rstrip("/") or "/", "*.tar"))
    if storage.exists(spec):
        return [spec]
    raise ShardSetError(f"{spec}: no such file or directory")


def _dedupe(names: list[str]) -> list[str]:
    seen, out = set(), []
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out

"""Resolve SHARDS to an ordered list of tar files: the one resolver of `aligndata inspect`, the report page and the
trainer (``train``, ``evaluate``, ``tokenizer train``).

SHARDS is one of these, or several of them joined with ``::`` (webdataset's convention):

* directory: every ``*.tar`` directly inside it (``dir/``, ``gs://bucket/shards``)
* glob: ``shards/*.tar``, ``gs://bucket/shards/0000?.tar``; the matches ending in ``.tar``, or every match when
  none does (an explicitly globbed ``*.tar.gz`` set)
* brace pattern (webdataset's notation): ``shards/{00000..00099}.tar``, ``{a,b}.tar``; every expanded name must
  exist, so a typo in the range is an error rather than a silently smaller set
* a single ``.tar`` path or URL

Local paths may be written as ``file://`` URLs; they resolve to plain paths. Directories and globs come out
sorted, brace patterns in their expansion order; parts keep their order and a shard named twice is kept once
(first place), so every rank and worker sees the same list in the same order.

Companion files sit beside each tar: ``NAME.parquet``, ``NAME_stats.json`` and the directory's ``sizes.json``
(``{"00000.tar": count, ...}``, read by ``ShardSet.sizes`` / ``ShardSet.total_samples``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import braceexpand

from aligndata.io.storage import StorageError, storage_for, strip_file_scheme

_GLOB_CHARS = set("*?[")
_FORMS = "give a directory, a glob, a {00000..00009}.tar pattern or a .tar path/URL, or several joined with '::'"


class ShardSetError(Exception):
    """SHARDS names nothing usable, or its sizes.json is broken (the message says what was tried)."""


def _scheme(path: str) -> str:
    head, sep, _ = path.partition("://")
    return head.lower() if sep and "/" not in head else ""


@dataclass
class ShardSet:
    """An ordered list of shard paths/URLs; each is read through the storage backend for its scheme."""

    spec: str
    paths: list[str]
    _storages: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def storage(self, path: str):
        """The storage backend of ``path`` (one per scheme, so a ``::`` list may mix local paths and URLs)."""
        key = _scheme(path)
        if key not in self._storages:
            self._storages[key] = storage_for(path)
        return self._storages[key]

    def parent(self, path: str) -> str:
        return self.storage(path).parent(path)

    def basename(self, path: str) -> str:
        return self.storage(path).basename(path)

    def join(self, directory: str, name: str) -> str:
        return self.storage(directory).join(directory, name)

    def stem(self, path: str) -> str:
        """``dir/00000.tar`` -> ``00000``."""
        base = self.basename(path)
        return base[: -len(".tar")] if base.endswith(".tar") else base

    def name(self, path: str) -> str:
        """The shard's label in every message: its stem, or its full path when two shards share a stem."""
        stems = [self.stem(p) for p in self.paths]
        stem = self.stem(path)
        return stem if stems.count(stem) <= 1 else path

    def companion(self, path: str, suffix: str) -> str:
        """``dir/00000.tar`` + ``.parquet`` -> ``dir/00000.parquet``."""
        return self.join(self.parent(path), self.stem(path) + suffix)

    def sizes_json(self, path: str) -> str:
        return self.join(self.parent(path), "sizes.json")

    def open(self, path: str):
        return self.storage(path).open_read(path)

    def exists(self, path: str) -> bool:
        return self.storage(path).exists(path)

    def size(self, path: str) -> int:
        return self.storage(path).size(path)

    def read_json(self, path: str):
        """Parsed JSON, or None when the file is absent; a broken file raises ValueError naming it."""
        if not self.exists(path):
            return None
        with self.open(path) as f:
            raw = f.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err

    def sizes(self) -> dict[str, int | None]:
        """Samples per shard from the ``sizes.json`` beside it: {path: count}, None where the file is missing or
        has no entry for the shard. A sizes.json that is unreadable or not ``{name: count >= 0}`` raises
        ShardSetError (a wrong count would silently mis-plan a training run)."""
        tables: dict[str, dict] = {}
        out: dict[str, int | None] = {}
        for path in self.paths:
            sizes_path = self.sizes_json(path)
            if sizes_path not in tables:
                tables[sizes_path] = self._read_sizes(sizes_path)
            out[path] = tables[sizes_path].get(self.basename(path))
        return out

    def total_samples(self) -> int | None:
        """Sum of the sizes.json counts; None when any shard's count is unknown."""
        sizes = self.sizes()
        if any(v is None for v in sizes.values()):
            return None
        return sum(sizes.values())  # type: ignore[arg-type]

    def _read_sizes(self, path: str) -> dict:
        try:
            data = self.read_json(path)
        except (OSError, ValueError) as err:
            raise ShardSetError(f"{path}: cannot read sizes ({err})") from err
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(type(v) is int and v >= 0 for v in data.values()):
            raise ShardSetError(f"{path}: expected {{\"00000.tar\": count, ...}} with non-negative integer counts")
        return data


def resolve(spec: str) -> ShardSet:
    """The shards ``spec`` names (see the module docstring); raises ShardSetError naming the part that failed."""
    if not spec or not spec.strip():
        raise ShardSetError(f"SHARDS is empty: {_FORMS}")
    shards = ShardSet(spec, [])
    seen: set[str] = set()
    for part in spec.split("::"):
        if not part.strip():
            raise ShardSetError(f"{spec!r}: an empty part between '::' separators")
        try:
            found = _expand(strip_file_scheme(part), shards)
        except StorageError as err:
            raise ShardSetError(str(err)) from err
        except OSError as err:
            raise ShardSetError(f"cannot list {part}: {err}") from err
        for path in found:
            if path not in seen:
                seen.add(path)
                shards.paths.append(path)
    return shards


def _expand(part: str, shards: ShardSet) -> list[str]:
    storage = shards.storage(part)
    if "{" in part and "}" in part:
        names = list(braceexpand.braceexpand(part))
        missing = [n for n in names if not storage.exists(n)]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise ShardSetError(f"{part}: {len(missing)} of {len(names)} shards do not exist, e.g. "
                                f"{', '.join(missing[:3])}{more}")
        return names
    if _GLOB_CHARS & set(part):
        found = storage.glob(part)
        tars = [p for p in found if p.endswith(".tar")]
        if not tars and not found:
            raise ShardSetError(f"the pattern {part} matches no .tar shards (nor any other file)")
        return tars or found
    if storage.isdir(part):
        found = storage.glob(storage.join(part.rstrip("/") or "/", "*.tar"))
        if not found:
            raise ShardSetError(f"the directory {part} holds no .tar shards")
        return found
    if storage.exists(part):
        return [part]
    raise ShardSetError(f"{part}: no such file or directory ({_FORMS})")

"""Where shards live: local paths, or URLs through fsspec (preferred) or Apache Beam's ``FileSystems``.

Local paths use the standard library (fast, no surprises). For a URL (``gs://``, ``s3://``, ``memory://``, ...)
fsspec is used when it is installed *and* has an implementation for that protocol (``gcsfs``, ``s3fs``, ...);
otherwise Beam's ``FileSystems``, which the curate pipeline already uses to write ``gs://``/``s3://`` outputs
(``pip install 'aligndata[gcp]'``). fsspec is not a core dependency (it arrives with torch), so Beam is the
fallback that always exists.

Every backend offers the same few calls: ``glob``, ``isdir``, ``exists``, ``size``, ``open_read``, ``open_write``,
``delete``, ``replace``, ``join``, ``parent``, ``basename``.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from typing import IO

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class StorageError(Exception):
    """A path cannot be read or written (message names the path)."""


def scheme_of(path: str) -> str | None:
    match = _SCHEME_RE.match(path)
    return match.group(1).lower() if match and match.group(1).lower() != "file" else None


def strip_file_scheme(path: str) -> str:
    return path[len("file://"):] if path.lower().startswith("file://") else path


class LocalStorage:
    name = "local"

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in _glob.glob(pattern) if os.path.isfile(p))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.isfile(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def open_write(self, path: str) -> IO[bytes]:
        return open(path, "wb")

    def delete(self, path: str) -> None:
        if os.path.isfile(path):
            os.remove(path)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def join(self, directory: str, name: str) -> str:
        return os.path.join(directory, name)

    def parent(self, path: str) -> str:
        return os.path.dirname(path) or "."

    def basename(self, path: str) -> str:
        return os.path.basename(path)


class FsspecStorage:
    name = "fsspec"

    def __init__(self, protocol: str):
        import fsspec

        self.protocol = protocol
        self.fs = fsspec.filesystem(protocol)

    def _url(self, path: str) -> str:
        return path if scheme_of(path) else f"{self.protocol}://{path}"

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._url(p) for p in self.fs.glob(pattern) if self.fs.isfile(p))

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path)

    def exists(self, path: str) -> bool:
        return self.fs.isfile(path)

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "rb")

    def open_write(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "wb")

    def delete(self, path: str) -> None:
        if self.fs.isfile(path):
            self.fs.rm(path)

    def replace(self, source: str, target: str) -> None:
        self.fs.mv(source, target)

    def join(self, directory: str, name: str) -> str:
        return directory.rstrip("/") + "/" + name

    def parent(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    def basename(self, path: str) -> str:
        return path.rstrip("/").rsplit("/", 1)[-1]


class BeamStorage:
    name = "beam"

    def __init__(self):
        from apache_beam.io.filesystems import FileSystems

        self.fs = FileSystems

    def glob(self, pattern: str) -> list[str]:
        results = self.fs.match([pattern])
        return sorted(m.path for r in results for m in r.metadata_list)

    def isdir(self, path: str) -> bool:
        # Object stores have no directories: a "directory" is a prefix with something under it.
        results = self.fs.match([self.join(path, "*")])
        return any(r.metadata_list for r in results)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def size(self, path: str) -> int:
        return self.fs.match([path])[0].metadata_list[0].size_in_bytes

    def open_read(self, path: str) -> IO[bytes]:
        from apache_beam.io.filesystem import CompressionTypes

        return self.fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def open_write(self, path: str) -> IO[bytes]:
        from apache_beam.io.filesystem import CompressionTypes

        return self.fs.create(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.delete([path])

    def replace(self, source: str, target: str) -> None:
        self.delete(target)  # Beam's rename refuses an existing target on some filesystems
        self.fs.rename([source], [target])

    def join(self, directory: str, name: str) -> str:
        return self.fs.join(directory, name)

    def parent(self, path: str) -> str:
        return self.fs.split(path)[0]

    def basename(self, path: str) -> str:
        return self.fs.split(path)[1]


def storage_for(path: str):
    """The backend that handles ``path`` (see the module docstring for the choice)."""
    scheme = scheme_of(path)
    if scheme is None:
        return LocalStorage()
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)  # ImportError/ValueError when the protocol's package is missing
        return FsspecStorage(scheme)
    except (ImportError, ValueError):
        pass
    beam = BeamStorage()
    try:
        beam.fs.get_filesystem(path)
    except ValueError as err:
        raise StorageError(
            f"no filesystem for {scheme}:// URLs ({path}): install fsspec with its {scheme} package "
            f"(e.g. gcsfs, s3fs) or Apache Beam's extras (pip install 'aligndata[gcp]' / 'aligndata[aws]')"
        ) from err
    return beam

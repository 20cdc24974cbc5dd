"""Where files live: local paths through the standard library, URLs through Apache Beam's ``FileSystems`` or fsspec.

The one storage layer of aligndata: every file access outside ``aligndata/pipeline/`` goes through a backend
from :func:`storage_for`, and this module is the only one outside the pipeline that imports Beam (lazily).

Which backend handles a path:

* a local path (no scheme, or ``file://``): :class:`LocalStorage`, the standard library;
* a URL (``gs://``, ``s3://``, ``memory://``, ...) while Apache Beam is already imported (a curate or extract
  run, a Beam worker) and Beam has a filesystem for the scheme: :class:`BeamStorage`, so everything a run writes
  goes through the filesystems its pipeline uses (including ones registered only with Beam, like the tests'
  ``testobj://``);
* otherwise fsspec when it has an implementation for the protocol (``gcsfs``, ``s3fs``, ...): :class:`FsspecStorage`;
* otherwise Beam's ``FileSystems`` (imported on first use): :class:`BeamStorage`.

Every backend offers the same calls: ``glob`` (shell-style, ``*`` skips dotfiles), ``match`` (Beam's pattern
semantics, used for inputs: ``*`` stays within a directory and matches dotfiles, ``**`` crosses directories),
``list_files`` (every file under a directory), ``isdir``, ``exists`` (a file), ``size``, ``open_read``,
``open_write`` (creates missing parent directories), ``read_range``, ``delete`` (a file), ``delete_tree``,
``replace``, ``makedirs``, ``join``, ``parent``, ``basename``. ``appendable`` says whether ``open_append`` exists:
local files can be appended to and are visible while written; an object store shows an object only once the
writer closes it, and has no append.
"""

from __future__ import annotations

import glob as _glob
import os
import re
import shutil
import sys
from typing import IO

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_GLOB_PREFIX_RE = re.compile(r"^[^[*?]*")


class StorageError(Exception):
    """A path cannot be read or written (message names the path)."""


def scheme_of(path: str) -> str | None:
    match = _SCHEME_RE.match(path)
    return match.group(1).lower() if match and match.group(1).lower() != "file" else None


def strip_file_scheme(path: str) -> str:
    return path[len("file://"):] if path.lower().startswith("file://") else path


def has_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a wildcard (``*``, ``?`` or ``[``)."""
    return _GLOB_PREFIX_RE.match(pattern).group(0) != pattern


def translate_pattern(pattern: str) -> str:
    """A regular expression for a path pattern with Beam's semantics: fnmatch's, except that ``*`` does not cross
    ``/`` (nor ``\\``) and ``**`` does. (What ``FileSystems.match`` does; based on Python's fnmatch.translate.)"""
    i, n = 0, len(pattern)
    out = []
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append(r"[^/\\]*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")
            else:
                stuff = pattern[i:j].replace("\\", "\\\\")
                i = j + 1
                if stuff[0] == "!":
                    stuff = "^" + stuff[1:]
                elif stuff[0] == "^":
                    stuff = "\\" + stuff
                out.append(f"[{stuff}]")
        else:
            out.append(re.escape(c))
    return r"(?ms)" + "".join(out) + r"\Z"


class LocalStorage:
    name = "local"
    appendable = True

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in _glob.glob(pattern) if os.path.isfile(p))

    def match(self, pattern: str) -> list[str]:
        if pattern.endswith(("/", "\\")):
            pattern += "*"
        prefix = _GLOB_PREFIX_RE.match(pattern).group(0)
        if prefix == pattern:
            return [pattern] if os.path.isfile(pattern) else []
        directory = os.path.dirname(prefix)
        regex = re.compile(translate_pattern(pattern))
        # Beam lists everything under the directory, then filters; without "**" (or "?"/"[", which may match
        # a "/") no match lies deeper than the pattern's own "/"s, so the walk stops there.
        max_depth = None
        if "**" not in pattern and "?" not in pattern and "[" not in pattern:
            max_depth = pattern.count("/") - (directory.rstrip("/").count("/") if directory else -1) - 1
        if directory:
            candidates = self.list_files(directory, max_depth)
        else:  # a relative pattern such as "*.csv": the working directory, paths as the user would write them
            candidates = [os.path.relpath(p, ".") for p in self.list_files(".", max_depth)]
        return sorted(p for p in candidates if regex.match(p))

    def list_files(self, directory: str, max_depth: int | None = None) -> list[str]:
        """Every file under ``directory`` (at most ``max_depth`` directories down; 0: its own files)."""
        out = []
        base = directory.rstrip(os.sep).count(os.sep)
        for root, dirs, names in os.walk(directory):
            out.extend(os.path.join(root, name) for name in names)
            if max_depth is not None and root.rstrip(os.sep).count(os.sep) - base >= max_depth:
                dirs.clear()
        return sorted(out)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.isfile(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def open_write(self, path: str) -> IO[bytes]:
        self._make_parent(path)
        return open(path, "wb")

    def open_append(self, path: str) -> IO[bytes]:
        self._make_parent(path)
        return open(path, "ab")

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def delete(self, path: str) -> None:
        if os.path.isfile(path):
            os.remove(path)

    def delete_tree(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            self.delete(path)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def join(self, directory: str, *names: str) -> str:
        return os.path.join(directory, *names)

    def parent(self, path: str) -> str:
        return os.path.dirname(path) or "."

    def basename(self, path: str) -> str:
        return os.path.basename(path)

    @staticmethod
    def _make_parent(path: str) -> None:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)


class FsspecStorage:
    name = "fsspec"
    appendable = False

    def __init__(self, protocol: str):
        import fsspec

        self.protocol = protocol
        self.fs = fsspec.filesystem(protocol)

    def _url(self, path: str) -> str:
        return path if scheme_of(path) else f"{self.protocol}://{path}"

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._url(p) for p in self.fs.glob(pattern) if self.fs.isfile(p))

    def match(self, pattern: str) -> list[str]:
        if not has_glob(pattern):
            return [pattern] if self.exists(pattern) else []
        return self.glob(pattern)  # fsspec's globs: "*" stays within a directory, "**" crosses them

    def list_files(self, directory: str) -> list[str]:
        try:
            return sorted(self._url(p) for p in self.fs.find(directory))
        except FileNotFoundError:
            return []

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

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with self.fs.open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def delete(self, path: str) -> None:
        if self.fs.isfile(path):
            self.fs.rm(path)

    def delete_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def replace(self, source: str, target: str) -> None:
        self.fs.mv(source, target)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def join(self, directory: str, *names: str) -> str:
        return "/".join([directory.rstrip("/"), *names])

    def parent(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    def basename(self, path: str) -> str:
        return path.rstrip("/").rsplit("/", 1)[-1]


class BeamStorage:
    """Apache Beam's ``FileSystems``: what a curate run has always used for gs:// and s3:// (``aligndata[gcp]``,
    ``aligndata[aws]``). Files are opened uncompressed: decompression is the caller's choice, by name."""

    name = "beam"
    appendable = False

    def __init__(self):
        from apache_beam.io.filesystems import FileSystems

        self.fs = FileSystems

    def glob(self, pattern: str) -> list[str]:
        return self.match(pattern)

    def match(self, pattern: str) -> list[str]:
        results = self.fs.match([pattern])
        return sorted(m.path for r in results for m in r.metadata_list if not m.path.endswith("/"))

    def list_files(self, directory: str) -> list[str]:
        try:
            return self.match(self.join(directory, "**"))
        except Exception:  # BeamIOError: nothing there
            return []

    def isdir(self, path: str) -> bool:
        # Object stores have no directories: a "directory" is a prefix with something under it.
        try:
            results = self.fs.match([self.join(path, "*")])
        except Exception:  # BeamIOError when the prefix does not exist on some filesystems
            return False
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

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with self.open_read(path) as f:
            f.seek(offset)
            return f.read(length)

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.delete([path])

    def delete_tree(self, path: str) -> None:
        if self.fs.exists(path):  # a file, or a directory on filesystems that have them (deleted recursively)
            self.fs.delete([path])
            return
        files = self.list_files(path)  # an object store: every object under the prefix
        if files:
            self.fs.delete(files)

    def replace(self, source: str, target: str) -> None:
        try:
            self.fs.rename([source], [target])
        except Exception:
            if not (self.fs.exists(target) and self.fs.exists(source)):
                raise
            self.fs.delete([target])  # Beam's rename refuses an existing target on some filesystems
            self.fs.rename([source], [target])

    def makedirs(self, path: str) -> None:
        if not self.fs.exists(path):
            self.fs.mkdirs(path)  # a no-op on object stores, where "directories" are prefixes

    def join(self, directory: str, *names: str) -> str:
        return self.fs.join(directory, *names)

    def parent(self, path: str) -> str:
        return self.fs.split(path)[0]

    def basename(self, path: str) -> str:
        return self.fs.split(path)[1]


_LOCAL = LocalStorage()


def _beam_handles(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(path)
    except Exception:  # ValueError: no filesystem registered for the scheme (or its package is missing)
        return False
    return True


def storage_for(path: str):
    """The backend that handles ``path`` (see the module docstring for the choice)."""
    scheme = scheme_of(path)
    if scheme is None:
        return _LOCAL
    if "apache_beam" in sys.modules and _beam_handles(path):
        return BeamStorage()
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)  # ImportError/ValueError when the protocol's package is missing
        return FsspecStorage(scheme)
    except (ImportError, ValueError):
        pass
    beam = BeamStorage()
    if not _beam_handles(path):
        raise StorageError(
            f"no filesystem for {scheme}:// URLs ({path}): install fsspec with its {scheme} package "
            f"(e.g. gcsfs, s3fs) or Apache Beam's extras (pip install 'aligndata[gcp]' / 'aligndata[aws]')"
        )
    return beam

"""A Beam filesystem with object-store semantics for tests: ``testobj://<local path>``.

Like gs:// or s3://, an object written with ``create`` is invisible until it is closed, and there is no append.
Registered with Beam by being imported (Beam finds FileSystem subclasses by their scheme).
"""

from __future__ import annotations

import os

from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "testobj://"


def _local(path: str) -> str:
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


class _Upload:
    """Written to a hidden in-flight file, published under its name on close."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path + ".inflight", "wb")

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        pass  # an upload is not visible before close, whatever the writer flushes

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            os.replace(self.path + ".inflight", self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ObjectStoreFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return "testobj"

    def join(self, basepath, *paths):
        return PREFIX + os.path.join(_local(basepath), *paths)

    def split(self, path):
        head, tail = os.path.split(_local(path))
        return PREFIX + head, tail

    def mkdirs(self, path):
        pass  # object stores have no directories

    def has_dirs(self):
        return False

    match = FileSystem.match  # list by prefix, then glob, as for gs:// (LocalFileSystem's own uses glob.glob)

    def _list(self, dir_or_prefix):
        for root, _, names in os.walk(_local(dir_or_prefix)):
            for name in names:
                path = os.path.join(root, name)
                yield FileMetadata(PREFIX + path, os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Upload(_local(path))

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return open(_local(path), "rb")

    def exists(self, path):
        return super().exists(_local(path))

    def delete(self, paths):
        super().delete([_local(p) for p in paths])

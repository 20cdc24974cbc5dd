"""Read WebDataset tars as untrusted input: stream members into memory, group them into samples, never extract.

Nothing here touches the filesystem except reading the tar. Members that could escape a directory if someone
extracted them (absolute names, ``..`` components), links, devices and FIFOs are reported and skipped, never
followed. Oddities that make a shard differ from our output contract (dotted keys, members of a sample that are
not adjacent, a member repeated in a sample, a tar that ends early) are reported through ``on_problem`` while
reading goes on as far as it safely can.

Keys follow webdataset: the key is the member path up to the first dot of its last component, the extension
is the rest (``abc.def.jpg`` -> key ``abc``, extension ``def.jpg``).
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TEXT_EXTS = ("txt", "json", "cls")
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # a larger "image" or caption is hostile or broken; don't hold it in memory
_TAIL_KEEP = 64 * 1024

Problem = Callable[[str, "str | None", str], None]


def _ignore(shard: str, key: str | None, problem: str) -> None:
    pass


@dataclass
class Sample:
    """One sample: ``files`` maps extension -> payload (None when the caller did not ask for that payload)."""

    shard: str
    key: str
    index: int  # position within its shard
    files: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def image_ext(self) -> str | None:
        return next((ext for ext in IMAGE_EXTS if ext in self.files), None)

    @property
    def image(self) -> bytes | None:
        ext = self.image_ext
        return self.files[ext] if ext else None

    @property
    def text(self) -> str | None:
        raw = self.files.get("txt")
        return raw.decode("utf-8", errors="replace") if raw is not None else None

    @property
    def meta(self) -> dict | None:
        """The parsed .json, or None when absent or not a JSON object."""
        raw = self.files.get("json")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None

    @property
    def caption(self) -> str | None:
        text = self.text
        if text is None and self.meta:
            value = self.meta.get("caption")
            text = value if isinstance(value, str) else None
        return text


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, or None when its last component has no dot."""
    directory, base = posixpath.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (posixpath.join(directory, stem) if directory else stem), ext


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be read as sample data, or None when it is a plain, contained file."""
    name = member.name
    if member.issym():
        return f"member {name!r} is a symbolic link to {member.linkname!r}: skipped, never followed"
    if member.islnk():
        return f"member {name!r} is a hard link to {member.linkname!r}: skipped, never followed"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or name.startswith("\\"):
        return f"member {name!r} has an absolute path: skipped, never extracted"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return f"member {name!r} has a '..' component: skipped, never extracted"
    if not member.isfile():
        return f"member {name!r} is not a regular file (tar type {member.type!r}): skipped"
    return None


class _TailReader:
    """A read-only file wrapper counting bytes and keeping the last few KiB, to check how the tar ended."""

    def __init__(self, raw):
        self.raw = raw
        self.count = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) if size is not None and size >= 0 else self.raw.read()
        self.count += len(data)
        self.tail = (self.tail + data)[-_TAIL_KEEP:]
        return data


def _end_problem(tar: tarfile.TarFile, reader: _TailReader) -> str | None:
    """A tar must end with two zero blocks after its last member; tarfile silently stops at EOF or garbage."""
    if getattr(tar.fileobj, "comptype", "tar") != "tar":
        return None  # compressed: the decompressor already complained about a cut stream
    while reader.read(1 << 20):
        pass
    end = tar.offset
    total = reader.count
    if end > total:
        return f"tar ends early: the last member needs {end - total} more bytes (truncated file)"
    start_of_tail = total - len(reader.tail)
    if end < start_of_tail:
        return f"{total - end} bytes after the last readable member are not tar members (corrupt or appended data)"
    rest = reader.tail[end - start_of_tail:]
    if rest.strip(b"\0"):
        if len(rest) < 512:
            return f"tar ends inside a member header at byte {end} (truncated file)"
        return f"unreadable tar header at byte {end} (corrupt file or data appended after the archive)"
    if len(rest) < 1024:
        return "no end-of-archive marker after the last member (truncated file)"
    return None


def iter_samples(fileobj, shard: str, want: Callable[[str], bool] | None = None,
                 on_problem: Problem = _ignore, check_end: bool = False) -> Iterator[Sample]:
    """Samples of one tar in file order. ``want(ext)`` says whose payloads to load (default all); the others
    are recorded with payload None (so "has an image" still works) and their bytes are skipped unread."""
    reader = _TailReader(fileobj)
    current: Sample | None = None
    finished: set[str] = set()
    index = 0
    members = 0
    try:
        tar = tarfile.open(fileobj=reader, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as err:
        on_problem(shard, None, f"not a readable tar: {err}")
        return
    try:
        for member in tar:
            members += 1
            if member.isdir():
                continue
            reason = unsafe_reason(member)
            if reason:
                on_problem(shard, None, reason)
                continue
            parsed = split_member_name(member.name)
            if parsed is None:
                on_problem(shard, None, f"member {member.name!r} has no extension: not part of any sample")
                continue
            key, ext = parsed
            if "." in ext:  # our members are exactly KEY.<ext>: a dotted rest means the key had a dot
                on_problem(shard, key, f"dotted key: member {member.name!r} reads as key {key!r} + extension "
                                       f"{ext!r} (webdataset splits at the first dot)")
            if current is None or current.key != key:
                if current is not None:
                    finished.add(current.key)
                    yield current
                    index += 1
                if key in finished:
                    on_problem(shard, key, "members of this sample are not adjacent (webdataset would read two "
                                           "samples with the same key)")
                current = Sample(shard, key, index)
            if ext.lower() in IMAGE_EXTS + TEXT_EXTS:
                ext = ext.lower()  # "JPG" is still the image
            if ext in current.files:
                on_problem(shard, key, f"member {member.name!r} appears twice in the sample")
            if member.size > MAX_MEMBER_BYTES:
                on_problem(shard, key, f"member {member.name!r} is {member.size} bytes (> {MAX_MEMBER_BYTES}): "
                                       f"skipped")
                current.files.setdefault(ext, None)
                continue
            payload = None
            if want is None or want(ext):
                handle = tar.extractfile(member)
                payload = handle.read() if handle is not None else b""
            current.files[ext] = payload
        if current is not None:
            yield current
            current = None
        if check_end:
            problem = _end_problem(tar, reader)
            if problem:
                on_problem(shard, None, problem)
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        if current is not None:
            on_problem(shard, current.key, "sample cut off by the read error below: not returned")
        on_problem(shard, None, f"tar unreadable after {members} members: {err} (truncated or corrupt)")


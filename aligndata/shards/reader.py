"""Read WebDataset tars as untrusted input: stream members into memory, group them into samples, never extract.

The one shard reader: `aligndata inspect` and the report page (``iter_samples`` on an open file) and the trainer,
tokenizer and evaluation (``iter_shards`` over URLs, each opened through ``aligndata.io.storage``).

Nothing here touches the filesystem except reading the tar. Members that could escape a directory if someone
extracted them (absolute names, ``..`` components), links, devices and FIFOs are reported and skipped, never
followed. Oddities that make a shard differ from our output contract (dotted keys, members of a sample that are
not adjacent, a member repeated in a sample, a tar that ends early) are reported through ``on_problem`` while
reading goes on as far as it safely can.

Keys follow webdataset: the key is the member path up to the first dot of its last component, the extension
is the rest (``abc.def.jpg`` -> key ``abc``, extension ``def.jpg``).

For training (``iter_shards``), a shard that cannot be opened or ends early, and every member-level problem, go
to ``on_error(url, exc)`` (``ShardProblem``, or the storage's own exception) and reading moves on: one bad file
must not kill a long training run.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from aligndata.io.storage import storage_for, strip_file_scheme
from aligndata.shards.contract import IMAGE_EXTS, TEXT_EXTS

log = logging.getLogger(__name__)

MAX_MEMBER_BYTES = 256 * 1024 * 1024  # a larger "image" or caption is hostile or broken; don't hold it in memory
_TAIL_KEEP = 64 * 1024

Problem = Callable[[str, "str | None", str], None]
_Report = Callable[["str | None", str, bool], None]  # (key, problem, fatal: the rest of the shard is unreadable)


def _ignore(shard: str, key: str | None, problem: str) -> None:
    pass


class ShardProblem(Exception):
    """What ``iter_shards`` hands to ``on_error``: ``fatal`` when the rest of the shard could not be read (not a
    tar, truncated, corrupt), else a member-level problem (an unsafe or oversized member skipped, a dotted key,
    members of a sample not adjacent, ...) after which reading went on."""

    def __init__(self, problem: str, key: str | None = None, fatal: bool = False):
        super().__init__(f"{key}: {problem}" if key else problem)
        self.problem, self.key, self.fatal = problem, key, fatal


@dataclass
class Sample:
    """One sample as read: ``files`` maps extension -> payload (None when the caller did not ask for that payload,
    or the member was too large to hold). Untrusted, so anything may be missing or extra; ``shards.writer.Sample``
    is the other side, a complete sample about to be written (one image, a caption, its metadata)."""

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
        """What a person is shown: the .txt (undecodable bytes replaced), else the .json's caption."""
        text = self.text
        if text is None and self.meta:
            value = self.meta.get("caption")
            text = value if isinstance(value, str) else None
        return text

    @property
    def strict_text(self) -> str | None:
        """What a model trains on: the .txt as strict UTF-8, stripped; None when missing, undecodable or empty."""
        raw = self.files.get("txt")
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
        return text or None

    @property
    def class_id(self) -> int | None:
        """The .cls as a non-negative integer; None when missing or not one."""
        raw = self.files.get("cls")
        if raw is None:
            return None
        try:
            value = int(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
        return value if value >= 0 else None


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
    return _read(fileobj, shard, want, lambda key, problem, fatal: on_problem(shard, key, problem), check_end)


def _log_error(url: str, exn: Exception) -> None:
    log.warning("shard %s: %s", url, exn)


def iter_shard(url: str, on_error: Callable[[str, Exception], None] | None = None,
               want: Callable[[str], bool] | None = None) -> Iterator[Sample]:
    """Samples of the shard at ``url`` (a path or URL, opened through ``aligndata.io.storage``; ``Sample.shard``
    is ``url``). Problems go to ``on_error(url, exc)`` (default: a logged warning) and never stop the caller."""
    report = on_error or _log_error
    try:
        path = strip_file_scheme(url)
        handle = storage_for(path).open_read(path)
    except Exception as exn:  # any backend's error (missing file, permissions, network): skip this shard
        report(url, exn)
        return
    try:
        with handle:
            yield from _read(handle, url, want,
                             lambda key, problem, fatal: report(url, ShardProblem(problem, key, fatal)), True)
    except Exception as exn:  # a backend error mid-stream that is not an OSError: the rest of this shard is lost
        report(url, exn)


def iter_shards(urls: Iterable[str], on_error: Callable[[str, Exception], None] | None = None,
                want: Callable[[str], bool] | None = None) -> Iterator[Sample]:
    """``iter_shard`` over each url in turn (``urls`` may be endless)."""
    for url in urls:
        yield from iter_shard(url, on_error, want)


def _read(fileobj, shard: str, want: Callable[[str], bool] | None, report: _Report,
          check_end: bool) -> Iterator[Sample]:
    reader = _TailReader(fileobj)
    current: Sample | None = None
    finished: set[str] = set()
    index = 0
    members = 0
    try:
        tar = tarfile.open(fileobj=reader, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as err:
        report(None, f"not a readable tar: {err}", True)
        return
    try:
        for member in tar:
            members += 1
            tar.members = []  # a stream-mode TarFile keeps every header it has read: memory would grow per member
            if member.isdir():
                continue
            reason = unsafe_reason(member)
            if reason:
                report(None, reason, False)
                continue
            parsed = split_member_name(member.name)
            if parsed is None:
                report(None, f"member {member.name!r} has no extension: not part of any sample", False)
                continue
            key, ext = parsed
            if "." in ext:  # our members are exactly KEY.<ext>: a dotted rest means the key had a dot
                report(key, f"dotted key: member {member.name!r} reads as key {key!r} + extension {ext!r} "
                            f"(webdataset splits at the first dot)", False)
            if current is None or current.key != key:
                if current is not None:
                    finished.add(current.key)
                    yield current
                    index += 1
                if key in finished:
                    report(key, "members of this sample are not adjacent (webdataset would read two samples with "
                                "the same key)", False)
                current = Sample(shard, key, index)
            if ext.lower() in IMAGE_EXTS + TEXT_EXTS:
                ext = ext.lower()  # "JPG" is still the image
            if ext in current.files:
                report(key, f"member {member.name!r} appears twice in the sample", False)
            if member.size > MAX_MEMBER_BYTES:
                report(key, f"member {member.name!r} is {member.size} bytes (> {MAX_MEMBER_BYTES}): skipped", False)
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
                report(None, problem, True)
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        if current is not None:
            report(current.key, "sample cut off by the read error below: not returned", False)
        report(None, f"tar unreadable after {members} members: {err} (truncated or corrupt)", True)


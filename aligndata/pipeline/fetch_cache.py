"""A content-addressed cache of fetch outcomes, so an interrupted curate run resumes without downloading again.

One file per URL, named by sha256(url), holding the outcome exactly as the run saw it: the downloaded bytes, or
the failure (reason, detail, status). A resumed run replays these outcomes, so it writes the same shards and the
same ledger as an uninterrupted run would have, byte for byte, and fetches only what it had not finished. Each
entry is written to a temporary name and renamed, so a run killed mid-write leaves no half entry. Paths go
through Beam's FileSystems, so the cache can live on gs:// or s3:// too (``--cache-dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from apache_beam.io.filesystems import FileSystems

from aligndata.pipeline.fetch import FetchResult

CACHE_DIR_NAME = ".fetch-cache"
_MAGIC = b"aligndata-fetch-cache 1\n"


def default_cache_dir(output_dir: str) -> str:
    return FileSystems.join(output_dir, CACHE_DIR_NAME)


class FetchCache:
    def __init__(self, directory: str):
        self.directory = directory
        # A local directory is written with os calls: Beam's FileSystems layer costs several times the write
        # itself per entry (measured ~0.5 ms vs ~0.1 ms). Object stores (gs://, s3://) go through FileSystems.
        self._local = "://" not in directory
        self._made: set[str] = set()

    def _path(self, url: str) -> str:
        digest = hashlib.sha256(url.encode("utf-8", errors="surrogatepass")).hexdigest()
        if self._local:
            return os.path.join(self.directory, digest[:2], digest)
        return FileSystems.join(self.directory, digest[:2], digest)

    def get(self, url: str) -> FetchResult | None:
        """The recorded outcome for ``url``, or None (absent or unreadable: then it is simply fetched again)."""
        path = self._path(url)
        try:
            with open(path, "rb") if self._local else FileSystems.open(path) as f:
                blob = f.read()
        except Exception:  # absent (local: OSError; object stores: BeamIOError) — not cached yet
            return None
        if not blob.startswith(_MAGIC):
            return None
        header_end = blob.find(b"\n", len(_MAGIC))
        if header_end < 0:
            return None
        try:
            header = json.loads(blob[len(_MAGIC):header_end])
        except ValueError:
            return None
        data = blob[header_end + 1:]
        if header["ok"] and len(data) != header["size"]:
            return None
        return FetchResult(
            url=url,
            ok=header["ok"],
            data=data if header["ok"] else None,
            reason=header["reason"],
            detail=header["detail"],
            status=header["status"],
            content_type=header["content_type"],
            final_url=header["final_url"],
            attempts=0,  # nothing was requested this time
        )

    def put(self, result: FetchResult) -> None:
        header = {
            "ok": result.ok,
            "reason": result.reason,
            "detail": result.detail,
            "status": result.status,
            "content_type": result.content_type,
            "final_url": result.final_url,
            "size": len(result.data) if result.ok else 0,
        }
        path = self._path(result.url)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        parent = os.path.dirname(path) if self._local else FileSystems.split(path)[0]
        if parent not in self._made:
            if self._local:
                os.makedirs(parent, exist_ok=True)
            else:
                try:
                    FileSystems.mkdirs(parent)
                except Exception:
                    pass  # it exists (another worker made it), or an object store, which has no directories
            self._made.add(parent)
        with open(tmp, "wb") if self._local else FileSystems.create(tmp) as f:
            f.write(_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
            if result.ok:
                f.write(result.data)
        if self._local:
            os.replace(tmp, path)
        else:
            FileSystems.rename([tmp], [path])

    def clear(self) -> None:
        if FileSystems.exists(self.directory):
            FileSystems.delete([self.directory])

"""1,000 hostile responses through a real curate run: every row accounted for, peak memory bounded.

The run is a child process that reports its own peak RSS (VmHWM). Each hostile kind is served under many
distinct URLs, so every row is a real download (or a real refusal).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from collections import Counter

import pytest
from helpers import png_chunk, png_header_only, read_report, write_pairs
from PIL import Image

from aligndata.inspect.ledger import read_ledger

pytestmark = pytest.mark.e2e

# The run's own peak RSS, read by the child itself: a forked child's ru_maxrss starts at the parent's (Linux keeps
# the pre-exec high-water mark), which here is pytest with torch loaded.
MEASURED_CLI = (
    "import sys\n"
    "from aligndata.cli import main\n"
    "rc = main(sys.argv[2:])\n"
    "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:')).split()[1]\n"
    "open(sys.argv[1], 'w').write(hwm)\n"
    "sys.exit(rc)\n"
)
N_ROWS = 1000
MAX_DOWNLOAD = 2_000_000
PEAK_RSS_BOUND_MB = 800  # measured 262 MB here; 32 threads x a 2 MB cap could add at most ~64 MB of bodies


def png_with_huge_text_chunk(mb: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 20, 30)).save(buffer, "PNG")
    png = buffer.getvalue()
    text = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (mb << 20)))
    return png[:33] + text + png[33:]  # after the IHDR chunk


def gif_with_many_frames(frames: int = 2000) -> bytes:
    images = [Image.new("P", (240, 240), i % 256) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=10)
    return buffer.getvalue()


# kind -> (path, the reason its rows must end with)
HOSTILE = {
    "gzip_bomb": ("/gzip-bomb?mb=200", "download_failed"),
    "lying_length_short": ("/lying-length/short", "decode_failed"),
    "lying_length_long": ("/lying-length/long", "download_failed"),
    "redirects_past_limit": ("/redirect/9", "download_failed"),
    "redirect_loop": ("/redirect-loop/2", "download_failed"),
    "empty_body": ("/hostile/empty.jpg", "download_failed"),
    "one_byte": ("/hostile/one-byte.jpg", "decode_failed"),
    "pixel_bomb": ("/hostile/bomb.png", "decode_failed"),
    "huge_text_chunk": ("/hostile/text-chunk.png", "decode_failed"),
    "svg": ("/hostile/image.svg", "decode_failed"),
    "html": ("/page.html", "decode_failed"),
    "reset_mid_body": ("/reset-mid-body", "download_failed"),
    "hangup": ("/hangup", "download_failed"),
    "many_frames_gif": ("/hostile/frames.gif", None),  # the first frame is a fine 240x240 image: kept
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, http_server):
    http_server.add("/hostile/empty.jpg", b"")
    http_server.add("/hostile/one-byte.jpg", b"\xff")
    http_server.add("/hostile/bomb.png", png_header_only(60_000, 60_000), "image/png")  # 3.6 gigapixels: ~10 GB
    http_server.add("/hostile/text-chunk.png", png_with_huge_text_chunk(), "image/png")
    http_server.add("/hostile/image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="900">'
                    b'<rect width="900" height="900" fill="red"/></svg>', "image/svg+xml")
    http_server.add("/hostile/frames.gif", gif_with_many_frames(), "image/gif")
    kinds = list(HOSTILE)
    rows = []
    for i in range(N_ROWS):
        kind = kinds[i % len(kinds)]
        path = HOSTILE[kind][0]
        url = http_server.url(path + ("&" if "?" in path else "?") + f"row={i}")
        rows.append((url, f"hostile response number {i} of kind {kind.replace('_', ' ')}", kind))
    directory = tmp_path_factory.mktemp("hostile")
    pairs = write_pairs(directory / "pairs.parquet", rows, kind=[r[2] for r in rows])
    out = directory / "out"
    hwm = directory / "peak_rss_kb"
    subprocess.run(
        [sys.executable, "-c", MEASURED_CLI, str(hwm), "curate", "--input", pairs, "--output", str(out),
         "--allow-private-networks", "--quiet", "--extra-cols", "kind", "--timeout", "10", "--retries", "2",
         "--max-download-bytes", str(MAX_DOWNLOAD), "--samples-per-shard", "500"],
        check=True,
    )
    return out, rows, int(hwm.read_text()) / 1024


def test_every_hostile_row_is_accounted_for_with_its_reason(hostile_run):
    out, rows, _ = hostile_run
    report = read_report(out)
    assert report["input_rows"] == N_ROWS and report["accounting_ok"]
    rejected = read_ledger(out, "rejected").to_pylist()
    by_row = {r["source_row"]: r for r in rejected}
    wrong = Counter()
    for i, (_, _, kind) in enumerate(rows):
        expected = HOSTILE[kind][1]
        got = by_row[i]["reason"] if i in by_row else None
        if got != expected:
            wrong[(kind, got, by_row[i]["detail"] if i in by_row else "")] += 1
    assert not wrong, wrong
    details = Counter((r["caption"].split(" of kind ")[1], r["detail"].split(":")[0]) for r in rejected)
    assert details[("gzip bomb", "too_large")] > 0
    assert details[("pixel bomb", "decompression_bomb")] > 0
    assert details[("redirects past limit", "too_many_redirects")] > 0
    assert details[("redirect loop", "redirect_loop")] > 0


def test_peak_memory_stays_bounded(hostile_run):
    _, _, peak_mb = hostile_run
    print(f"peak RSS of the hostile run: {peak_mb:.0f} MB")
    assert peak_mb < PEAK_RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"

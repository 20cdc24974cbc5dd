"""End to end: a crafted corpus whose exact outcome is known, curated against a local HTTP server.

One real run (FnApiRunner) feeds most assertions; a second identical run checks byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import shard_samples, write_pairs
from PIL import Image

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main
from aligndata.filters.registry import REASONS
from aligndata.pipeline.candidates import make_uid

pytestmark = pytest.mark.e2e

KEPT = None
# Files that legitimately differ between two runs (output path, retry counts and the page built from them).
VARYING = ("config.json", "report.json", "report.html")
TWENTY_ONE_WORDS = " ".join(f"word{i}" for i in range(21))


def corpus(server):
    """(url, caption, expected reason or KEPT) for every row, in input order; the second file repeats row 0."""
    u = server.url
    first = [
        (u("/image/640x480.jpg?e2e=a"), "a red circle on a white background", KEPT),
        (u("/image/640x480.jpg?e2e=a"), "the same photo with a second caption", KEPT),
        (u("/image/300x300.png?e2e=b"), "a blue square on a plain backdrop", KEPT),
        (u("/image/201x201.webp?e2e=c"), "a small green triangle just big enough", KEPT),
        (u("/image/602x201.jpg?e2e=d"), "a long panorama of green fields and hills", KEPT),
        (u("/image/500x400.gif?e2e=g"), "an animated cartoon of a dancing cat", KEPT),
        (u("/flaky/e2e"), "an image from a flaky server that recovers", KEPT),
        (u("/ratelimited/e2e?after=1"), "an image from a server that asks us to wait", KEPT),
        (None, "a row without any image url", "invalid_row"),
        ("ftp://example.com/a.jpg", "an image behind an unsupported scheme", "invalid_row"),
        (u("/image/400x400.jpg?e2e=empty"), "   ", "invalid_row"),
        (u("/image/400x400.jpg?e2e=short"), "two words", "text_too_short"),
        (u("/image/400x400.jpg?e2e=long"), TWENTY_ONE_WORDS, "text_too_long"),
        (u("/image/400x400.jpg?e2e=junk"), "WhatsApp Image 2021-01-01 at 10.00.00", "text_boilerplate"),
        *[(u(f"/image/400x400.jpg?e2e=shared{i}"), "click here to see the full gallery",
           "text_shared_by_too_many_images") for i in range(11)],
        *[(u("/image/400x400.jpg?e2e=many"), f"one of four captions number {i}", "image_too_many_texts")
          for i in range(4)],
        *[(u("/image/400x300.jpg?e2e=three"), f"one of three captions number {i}", KEPT) for i in range(3)],
        (u("/status/404"), "a photo that is no longer there", "download_failed"),
        (u("/robots-tag/noai"), "an image whose site forbids ai training", "robots_disallowed"),
        (u("/truncated.jpg?e2e"), "a broken file cut in half", "decode_failed"),
        (u("/page.html?e2e"), "a web page instead of a picture", "decode_failed"),
        (u("/image/300x200.jpg?e2e=small"), "a picture exactly two hundred pixels high", "image_too_small"),
        (u("/image/603x201.jpg?e2e=wide"), "a banner exactly three times as wide", "aspect_ratio_too_large"),
    ]
    second = [(first[0][0], first[0][1], "duplicate_pair")]
    return first, second


def write_inputs(directory: Path, first, second) -> list[str]:
    return [write_pairs(directory / "part-0.parquet", first, license=[f"license-{i}" for i in range(len(first))]),
            write_pairs(directory / "part-1.jsonl", second, license=["dup"] * len(second))]


def curate(inputs, output, *extra):
    return main([
        "curate", "--input", *inputs, "--output", str(output), "--allow-private-networks",
        "--extra-cols", "license", "--samples-per-shard", "4", "--max-texts-per-image", "3",
        "--timeout", "5", "--retries", "2", *extra,
    ])


@pytest.fixture(scope="module")
def run(tmp_path_factory, http_server):
    base = tmp_path_factory.mktemp("e2e")
    first, second = corpus(http_server)
    inputs = write_inputs(base, first, second)
    assert curate(inputs, base / "out") == 0
    hits_after_first_run = {url: http_server.hits(url) for url, _, _ in first if url and url.startswith("http")}
    return {"dir": base / "out", "rows": first + second, "inputs": inputs, "base": base,
            "hits": hits_after_first_run}


def read_json(path):
    return json.loads(Path(path).read_text())


def test_exact_survivors(run):
    expected = {(url, caption) for url, caption, reason in run["rows"] if reason is KEPT}
    got = {(json.loads(s["json"])["url"], s["txt"].decode()) for s in shard_samples(run["dir"]).values()}
    assert got == expected


def test_every_rejected_row_has_its_reason(run):
    table = read_ledger(run["dir"], "rejected").to_pylist()
    got = sorted((r["source_file"].rsplit("/", 1)[1], r["source_row"], r["reason"]) for r in table)
    expected = []
    files = ["part-0.parquet", "part-1.jsonl"]
    first_len = len(run["rows"]) - 1
    for i, (_, _, reason) in enumerate(run["rows"]):
        if reason is not KEPT:
            name, row = (files[0], i) if i < first_len else (files[1], i - first_len)
            expected.append((name, row, reason))
    assert got == sorted(expected)
    assert all(r["reason"] in REASONS for r in table)
    by_reason = {r["reason"]: r for r in table}
    assert by_reason["download_failed"]["detail"] == "http_404"
    assert "part-0.parquet" in by_reason["duplicate_pair"]["detail"] or "file 0" in by_reason["duplicate_pair"]["detail"]


def test_report_accounts_for_every_row(run):
    report = read_json(run["dir"] / "report.json")
    assert report["input_rows"] == len(run["rows"])
    assert report["accounting_ok"] is True
    assert report["input_rows"] == report["kept"] + sum(report["rejected_by_reason"].values())
    expected_counts = {}
    for _, _, reason in run["rows"]:
        if reason is not KEPT:
            expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert {r: n for r, n in report["rejected_by_reason"].items() if n} == expected_counts
    assert report["funnel"][-1]["rows"] == report["kept"]
    sizes = read_json(run["dir"] / "sizes.json")
    assert sum(sizes.values()) == report["kept"]
    assert len(sizes) == report["shards"] == len(list(run["dir"].glob("*.tar")))


def test_each_unique_url_fetched_once(run):
    hits = run["hits"]
    assert hits[run["rows"][0][0]] == 1  # two kept captions, one download
    three = [url for url, caption, _ in run["rows"] if "three captions" in caption][0]
    assert hits[three] == 1
    shared = [url for url, caption, _ in run["rows"] if "full gallery" in caption]
    assert all(hits[url] == 0 for url in shared)  # rejected by a text rule: never fetched
    assert hits[[u for u, c, _ in run["rows"] if "flaky" in c][0]] == 2  # 500 then a retry


def test_shards_follow_the_contract(run):
    out = run["dir"]
    sizes = read_json(out / "sizes.json")
    kept = {(url, caption) for url, caption, reason in run["rows"] if reason is KEPT}
    assert list(sizes) == [f"{i:05d}.tar" for i in range(len(sizes))]
    for name, count in sizes.items():
        stem = name[:-4]
        with tarfile.open(out / name) as tar:
            members = tar.getmembers()
        keys = [m.name.split(".", 1)[0] for m in members]
        # members of a sample are adjacent, keys sorted, fixed metadata
        assert keys == sorted(keys)
        assert len(set(keys)) == count == len(members) // 3
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        stats = read_json(out / f"{stem}_stats.json")
        assert stats["successes"] == count  # img2dataset's meanings: count is every row the shard was assigned
        assert stats["count"] == count + stats["failed_to_download"] + stats["failed_to_resize"]
        table = pq.read_table(out / f"{stem}.parquet").to_pylist()
        assert len(table) == count and {row["status"] for row in table} == {"success"}
    samples = shard_samples(out)
    assert len(samples) == len(kept)
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert key == meta["uid"] == meta["key"] == make_uid(meta["url"], meta["caption"])
        assert "." not in key and len(key) == 32
        assert sample["txt"].decode() == meta["caption"]
        assert meta["license"].startswith("license-")
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert (meta["width"], meta["height"]) == image.size
        assert min(meta["original_width"], meta["original_height"]) > 200
        assert max(image.size) <= max(meta["original_width"], meta["original_height"])  # never enlarged
        assert min(image.size) == min(346, min(meta["original_width"], meta["original_height"]))
        assert len(meta["sha256"]) == 64 and meta["phash"]
    by_url = {json.loads(s["json"])["url"]: json.loads(s["json"]) for s in samples.values()}
    a = by_url[run["rows"][0][0]]
    assert (a["original_width"], a["original_height"]) == (640, 480) and (a["width"], a["height"]) == (461, 346)


def test_sha256_is_of_the_downloaded_bytes(run, http_server):
    import requests

    url = run["rows"][2][0]
    body = requests.get(url, timeout=5).content
    meta = [json.loads(s["json"]) for s in shard_samples(run["dir"]).values()
            if json.loads(s["json"])["url"] == url][0]
    assert meta["sha256"] == hashlib.sha256(body).hexdigest()


def test_second_run_gives_identical_bytes(run):
    again = run["base"] / "again"
    assert curate(run["inputs"], again) == 0
    # config.json names the output dir; report.json's fetch section (and report.html, which shows it) counts
    # retries, which depend on the server (the flaky endpoints succeed at once the second time). Everything
    # else is byte-identical.
    def files(out):
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                      and p.name not in VARYING and not p.relative_to(out).as_posix().startswith("."))

    names = files(run["dir"])
    assert names == files(again)
    assert any(name.endswith(".tar") for name in names) and any(n.startswith("rejected/part-") for n in names)
    for name in names:
        assert (run["dir"] / name).read_bytes() == (again / name).read_bytes(), name
    first, second = read_json(run["dir"] / "report.json"), read_json(again / "report.json")
    assert first["fetch"]["fetch_attempts"] > second["fetch"]["fetch_attempts"]
    first.pop("fetch"), second.pop("fetch")
    assert first == second


def test_refuses_non_empty_output_without_overwrite(run, capsys):
    assert curate(run["inputs"], run["dir"], "--dry-run") == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(run["dir"]) in err

"""The same curate run on the other runners we support, and the private-network guard end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_report, write_pairs

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main

pytestmark = pytest.mark.e2e  # every test runs curate, on each runner


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, http_server):
    directory = tmp_path_factory.mktemp("runners")
    rows = [(http_server.url(f"/image/{320 + i}x240.jpg?runners={i}"), f"a small test photo number {i}")
            for i in range(6)]
    rows.append((http_server.url("/status/404?runners"), "a photo that is gone now"))
    rows.append((http_server.url("/image/100x100.jpg?runners=small"), "a photo that is far too small"))
    # two input files: on multi_processing each may be read and prepared by another worker
    return [write_pairs(directory / "pairs-a.parquet", rows[:4]), write_pairs(directory / "pairs-b.parquet", rows[4:])], \
        directory


def outcome(out: Path) -> tuple[dict, dict[str, bytes]]:
    report = read_report(out)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.suffix in (".tar", ".parquet") and not p.relative_to(out).as_posix().startswith(".")}
    return report, files


@pytest.fixture(scope="module")
def reference(pairs):
    path, directory = pairs
    out = directory / "fnapi"
    assert main(["curate", "--input", *path, "--output", str(out), "--allow-private-networks",
                 "--samples-per-shard", "3"]) == 0
    return outcome(out)


def test_reference_run(reference):
    report, files = reference
    assert report["kept"] == 6 and report["rejected_by_reason"]["download_failed"] == 1
    assert report["rejected_by_reason"]["image_too_small"] == 1
    # 8 rows reach the fetch stage: ceil(8 / 3) = 3 URL-hash ranges, empty ranges skipped
    assert 1 <= sum(name.endswith(".tar") for name in files) == report["shards"] <= 3
    # one ledger part per input file (each holds fewer than a part's rows)
    assert [name for name in files if name.startswith("rejected/")] == [
        "rejected/part-00000-of-00002.parquet", "rejected/part-00001-of-00002.parquet"]


def test_portable_runner_gives_the_same_bytes(pairs, reference):
    """The Job API and portable proto that Flink and Dataflow receive, run in-process."""
    path, directory = pairs
    out = directory / "portable"
    assert main(["curate", "--input", *path, "--output", str(out), "--allow-private-networks",
                 "--samples-per-shard", "3", "--runner", "PortableRunner", "--job_endpoint", "embed",
                 "--environment_type", "LOOPBACK"]) == 0
    report, files = outcome(out)
    assert files == reference[1]
    assert report["rejected_by_reason"] == reference[0]["rejected_by_reason"]
    assert json.loads((out / "config.json").read_text())["runner"] == "PortableRunner"


def test_multi_processing_gives_the_same_bytes(pairs, reference):
    """Also with one image processed at a time per worker: how many run at once never changes the bytes."""
    path, directory = pairs
    out = directory / "multi"
    assert main(["curate", "--input", *path, "--output", str(out), "--allow-private-networks",
                 "--samples-per-shard", "3", "--direct_running_mode", "multi_processing",
                 "--direct_num_workers", "2", "--image-threads", "1"]) == 0
    report, files = outcome(out)
    assert files == reference[1]
    assert report["kept"] == reference[0]["kept"]
    assert json.loads((out / "config.json").read_text())["options"]["image_threads"] == 1


def test_private_addresses_are_refused_by_default(pairs, http_server):
    path, directory = pairs
    out = directory / "guarded"
    assert main(["curate", "--input", *path, "--output", str(out)]) == 0
    report = read_report(out)
    assert report["kept"] == 0
    assert report["rejected_by_reason"]["blocked_address"] == 8
    details = {r["detail"] for r in read_ledger(out, "rejected").to_pylist()}
    assert all("127.0.0.1" in d for d in details), details

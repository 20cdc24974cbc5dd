"""img2dataset-compatible shard metadata and DataComp's shard names, on real curate runs (issue 16 items 3 and 4).

Two runs of one small corpus served from 127.0.0.1, with a failure of every kind the fetch stage knows: the
default (5-digit names) and ``--shard-digits 8 --parquet-failed-rows --shard-times``. img2dataset's reading
(rom1504/img2dataset: logger.py's LoggerProcess sums count, successes, failed_to_download and failed_to_resize
over the ``*_stats.json`` files and merges their status_dict; code written against its output keeps
``df[df.status == "success"]``) and DataComp's resharder (mlfoundations/datacomp resharder.py: shard names from
``--shard-format``, sizes from sizes.json or the stats' ``successes``, the .json's uid against a sorted u8,u8
array) are re-done here in a few lines each, from reading their code, and run on our outputs. Every reader of
ours is run on the set that holds failed rows.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import read_report, write_pairs

from aligndata.cli import main
from aligndata.inspect.ledger import read_ledger
from aligndata.inspect.report_page import gather
from aligndata.shards.outcomes import error_message, status_of
from aligndata.shards.spec import resolve

pytestmark = pytest.mark.e2e

TIME_FIELDS = ("start_time", "end_time", "duration")
U16 = np.dtype("u8,u8")


def corpus(server) -> list[tuple[str, str]]:
    u = server.url
    rows = [(u(f"/image/{320 + 10 * i}x{240 + i}.jpg?compat={i}"), f"a plain test photo number {i}")
            for i in range(9)]
    rows += [
        (u("/image/330x250.jpg?compat=two"), "one photo with two captions here"),
        (u("/image/330x250.jpg?compat=two"), "the same photo with porn in its caption"),  # nsfw, URL still fetched
        (u("/image/340x260.jpg?compat=nsfw"), "a porn caption the url is never fetched for"),  # nsfw, not fetched
        (u("/status/404?compat"), "a photo that is no longer there"),
        (u("/status/410?compat"), "a photo that is gone for good"),
        (u("/robots-tag/noai?compat"), "an image whose site forbids ai training"),
        (u("/truncated.jpg?compat"), "a broken file cut in half"),
        (u("/image/300x200.jpg?compat=small"), "a picture exactly two hundred pixels high"),
        (u("/image/603x201.jpg?compat=wide"), "a banner exactly three times as wide"),
    ]
    return rows


def curate(pairs: str, out: Path, *extra: str) -> None:
    assert main(["curate", "--input", pairs, "--output", str(out), "--allow-private-networks", "--quiet",
                 "--extra-cols", "license", "--samples-per-shard", "4", "--retries", "0", *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, http_server) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("compat")
    rows = corpus(http_server)
    pairs = write_pairs(base / "pairs.parquet", rows, license=[f"cc-by-{i}" for i in range(len(rows))])
    curate(pairs, base / "plain")
    curate(pairs, base / "full", "--shard-digits", "8", "--parquet-failed-rows", "--shard-times")
    return {"plain": base / "plain", "full": base / "full", "base": base}


def stems(out: Path) -> list[str]:
    return sorted(p.stem for p in out.glob("*.tar"))


def stats_of(out: Path) -> dict[str, dict]:
    return {stem: json.loads((out / f"{stem}_stats.json").read_text()) for stem in stems(out)}


def tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return list(dict.fromkeys(name.split(".", 1)[0] for name in tar.getnames()))


def fetch_stage_rejects(out: Path) -> list[dict]:
    """Ledger rows of the rows that were assigned to a shard and failed there (download, image, content)."""
    rows = read_ledger(out, "rejected").to_pylist()
    return [r for r in rows if r["reason"] in ("download_failed", "robots_disallowed", "blocked_address",
                                               "image_file_too_small", "decode_failed", "image_too_small",
                                               "aspect_ratio_too_large", "eval_set_duplicate", "nsfw")]


# ------------------------------------------------------------------------------------ img2dataset's reading


def img2dataset_totals(out: Path) -> tuple[dict, Counter]:
    """What img2dataset's LoggerProcess makes of an output folder: the four counters summed over the stats files
    and their status_dicts merged (it reads every ``*.json``; a file it cannot parse it only reports, so here only
    the ``*_stats.json`` files are read)."""
    totals = dict.fromkeys(("count", "successes", "failed_to_download", "failed_to_resize"), 0)
    statuses: Counter = Counter()
    for path in sorted(out.glob("*_stats.json")):
        stats = json.loads(path.read_text())
        for name in totals:
            totals[name] += stats[name]
        statuses.update(stats["status_dict"])
    return totals, statuses


def test_stats_have_img2dataset_fields_with_its_meanings(runs):
    out = runs["full"]
    report = read_report(out)
    totals, statuses = img2dataset_totals(out)
    # shards where nothing succeeded are dropped (no empty tar); report.json keeps their counters
    for dropped in report["shards_dropped_empty"]:
        assert dropped["successes"] == 0 and dropped["count"] > 0
        for name in totals:
            totals[name] += dropped[name]
        statuses.update(dropped["status_dict"])
    assert totals == report["shard_rows"]
    failed = fetch_stage_rejects(out)
    by_status = Counter(status_of(r["reason"]) for r in failed)
    assert totals == {"count": report["kept"] + len(failed), "successes": report["kept"],
                      "failed_to_download": by_status["failed_to_download"],
                      "failed_to_resize": by_status["failed_to_resize"]}
    # 404, 410 and X-Robots-Tag fail to download; the broken file, the size, aspect and NSFW rules to "resize"
    assert (by_status["failed_to_download"], by_status["failed_to_resize"]) == (3, 5)
    assert statuses == Counter({"success": report["kept"]}) + Counter(
        error_message(r["reason"], r["detail"]) for r in failed)
    assert statuses["download_failed: http_404"] == 1 and statuses["image_too_small: 300x200"] == 1
    for stats in stats_of(out).values():
        assert stats["count"] == stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"]
        assert sum(stats["status_dict"].values()) == stats["count"]
        assert stats["successes"] == len(tar_keys(out / f"{stats['shard']}.tar"))
        # our own fields stay
        assert stats["bytes"] == (out / f"{stats['shard']}.tar").stat().st_size and "key" in stats["meta_columns"]


def test_time_fields_only_when_asked_and_nothing_else_differs(runs):
    plain, full = runs["plain"], runs["full"]
    assert [s.zfill(8) for s in stems(plain)] == stems(full)
    for stem in stems(plain):
        a = json.loads((plain / f"{stem}_stats.json").read_text())
        b = json.loads((full / f"{stem.zfill(8)}_stats.json").read_text())
        assert not set(TIME_FIELDS) & set(a)
        assert b["start_time"] <= b["end_time"] and b["duration"] == pytest.approx(b["end_time"] - b["start_time"])
        assert b["start_time"] > 1.6e9  # seconds since the epoch, as img2dataset's time.time()
        assert {k: v for k, v in b.items() if k not in TIME_FIELDS + ("shard",)} == \
            {k: v for k, v in a.items() if k != "shard"}
        # the tars are the same bytes whatever the names and options
        assert (plain / f"{stem}.tar").read_bytes() == (full / f"{stem.zfill(8)}.tar").read_bytes()


def test_parquet_status_and_error_message(runs):
    plain, full = runs["plain"], runs["full"]
    ledger = {r["uid"]: r for r in fetch_stage_rejects(full)}
    failed_rows = 0
    for stem in stems(plain):
        a = pq.read_table(plain / f"{stem}.parquet")
        b = pq.read_table(full / f"{stem.zfill(8)}.parquet")
        for table in (a, b):
            assert table.schema.field("status").type == table.schema.field("error_message").type == "string"
        assert a.column("status").to_pylist() == ["success"] * a.num_rows  # by default: the samples only
        assert a.column("error_message").null_count == a.num_rows
        samples = b.filter(pc.field("status") == "success")  # df[df.status == "success"]
        assert samples.to_pylist() == a.to_pylist()
        assert samples.column("key").to_pylist() == tar_keys(full / f"{stem.zfill(8)}.tar")
        for row in b.filter(pc.field("status") != "success").to_pylist():
            failed_rows += 1
            source = ledger[row["uid"]]
            assert row["status"] == status_of(source["reason"])
            assert row["error_message"] == error_message(source["reason"], source["detail"])
            assert (row["url"], row["caption"], row["key"]) == (source["url"], source["caption"], source["uid"])
            assert row["license"].startswith("cc-by-") and row["width"] is None and row["sha256"] is None
    stats = stats_of(full).values()
    assert failed_rows == sum(s["count"] - s["successes"] for s in stats)
    dropped = read_report(full)["shards_dropped_empty"]
    assert failed_rows + sum(d["count"] for d in dropped) == len(ledger)


# --------------------------------------------------------------------------- our readers, with failed rows


def test_inspect_reads_only_the_samples(runs, capsys):
    full = runs["full"]
    kept = read_report(full)["kept"]
    assert main(["inspect", "validate", str(full)]) == 0
    capsys.readouterr()
    assert main(["inspect", "summary", str(full), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["source"], summary["samples"]) == ("parquet", kept)
    assert main(["inspect", "show", str(full), "--index", str(kept - 1)]) == 0  # parquet row counts skip shards
    last = capsys.readouterr().out
    assert main(["inspect", "show", str(full), "--index", str(kept)]) == 1
    assert "past the end" in capsys.readouterr().err
    keys = [k for stem in stems(full) for k in tar_keys(full / f"{stem}.tar")]
    assert f"key      {keys[-1]}" in last
    assert main(["inspect", "grep", str(full), "photo"]) == 0
    found = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[1] for line in found) == sorted(
        k for k, c in captions(full).items() if "photo" in c)  # never a failed row's caption


def captions(out: Path) -> dict[str, str]:
    result = {}
    for stem in stems(out):
        with tarfile.open(out / f"{stem}.tar") as tar:
            for info in tar:
                if info.name.endswith(".txt"):
                    result[info.name[:-4]] = tar.extractfile(info).read().decode()
    return result


def test_validate_finds_a_failed_row_that_is_in_the_tar(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in runs["full"].iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    stem = next(s for s, stats in stats_of(broken).items() if stats["count"] > stats["successes"])
    table = pq.read_table(broken / f"{stem}.parquet")
    statuses = table.column("status").to_pylist()
    first_key = table.column("key")[0].as_py()
    statuses[0] = "failed_to_download"  # a sample of the tar said to have failed
    table = table.set_column(table.schema.get_field_index("status"), "status", [statuses])
    pq.write_table(table, broken / f"{stem}.parquet")
    assert main(["inspect", "validate", str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{stem}.parquet says failed_to_download but the sample is in the tar" in out
    assert f"in the tar but not in {stem}.parquet" in out and first_key in out


def test_report_page_counts_the_samples_only(runs):
    plain, full = gather(str(runs["plain"])), gather(str(runs["full"]))
    assert full["histogram_rows"] == plain["histogram_rows"] == read_report(runs["full"])["kept"]
    assert {k: h.counts for k, h in full["histograms"].items()} == {k: h.counts for k, h in plain["histograms"].items()}
    assert full["shard_count"] == plain["shard_count"] and len(full["thumbnails"]) == len(plain["thumbnails"])


def test_trainer_reads_the_samples_of_the_set(runs):
    pytest.importorskip("torch")
    from aligndata.models import data
    from aligndata.models.tokenizer import train_tokenizer

    full = runs["full"]
    shards = resolve(str(full))
    assert shards.total_samples() == read_report(full)["kept"]  # the epoch size training plans with
    tokenizer = train_tokenizer(list(captions(full).values()) * 3, vocab_size=120, min_frequency=1)
    config = data.DataConfig(urls=shards.paths, batch_size=1, image_size=24, resize_size=28, shuffle_buffer=0,
                             workers=0)
    keys = []
    for batch in data.Loader(config, tokenizer):
        keys += batch["keys"]
        if len(keys) == shards.total_samples():
            break
    assert sorted(keys) == sorted(captions(full))


# ----------------------------------------------------------------------------------------- DataComp


def resharder_shards(input_dir: Path, shard_format: str = "{:08d}.tar",
                     stats_format: str = "{:08d}_stats.json") -> list[tuple[str, int]]:
    """(shard name, samples) as DataComp's resharder plans them (load_shard_metadata, guess_num_shards): shard
    ids from 0 while ``shard_format`` names an existing file (it finds the count by doubling then bisecting on
    existence); each size from sizes.json, else the stats file's ``successes`` when both it and the tar exist;
    a shard without a size is skipped. No shard at all is its RuntimeError."""
    count = 0
    while (input_dir / shard_format.format(count)).exists():
        count += 1
    if count == 0:
        raise RuntimeError("Did not find any shards")
    sizes = json.loads((input_dir / "sizes.json").read_text())
    planned = []
    for shard_id in range(count):
        name = shard_format.format(shard_id)
        if name not in sizes and (input_dir / stats_format.format(shard_id)).exists():
            sizes[name] = int(json.loads((input_dir / stats_format.format(shard_id)).read_text())["successes"])
        if name in sizes:
            planned.append((name, sizes[name]))
    return planned


def resharder_copies(input_dir: Path, planned: list[tuple[str, int]], subset_file: Path) -> list[str]:
    """The output keys the resharder writes (copy_worker): for each sample of each planned shard, its .json uid as
    divmod(int(uid, 16), 2**64) counted in the sorted subset array by searchsorted left/right, one ``UID-j`` per
    match. Also checks, as it logs, that each shard held the samples its size said."""
    subset = np.load(subset_file, mmap_mode="r")
    assert subset.dtype == U16
    keys = []
    for name, size in planned:
        processed = 0
        with tarfile.open(input_dir / name) as tar:
            for info in tar:
                if not info.name.endswith(".json"):
                    continue
                processed += 1
                uid = json.loads(tar.extractfile(info).read())["uid"]
                key = np.array([divmod(int(uid, 16), 2**64)], U16)[0]
                matches = int(np.searchsorted(subset, key, "right") - np.searchsorted(subset, key, "left"))
                keys += [f"{uid}-{j}" for j in range(matches)]
        assert processed == size, f"{name}: expected {size} samples but found {processed}"
    return keys


def uid_file(path: Path, uids: list[str]) -> Path:
    pairs = np.array(sorted((int(u[:16], 16), int(u[16:], 16)) for u in set(uids)), U16)
    np.save(path, pairs)
    return path


def test_eight_digit_names_everywhere(runs):
    full = runs["full"]
    names = sorted(p.name for p in full.iterdir() if p.is_file() and p.name[0].isdigit())
    assert names and all(len(name.split(".")[0].split("_")[0]) == 8 for name in names)
    assert [n for n in names if n.endswith(".tar")] == [f"{i:08d}.tar" for i in range(len(stems(full)))]
    assert list(json.loads((full / "sizes.json").read_text())) == [f"{i:08d}.tar" for i in range(len(stems(full)))]
    assert main(["inspect", "validate", f"{full}/{{{'0' * 8}..{len(stems(full)) - 1:08d}}}.tar"]) == 0


def test_resharder_needs_its_formats_for_our_default_names(runs):
    plain, full = runs["plain"], runs["full"]
    with pytest.raises(RuntimeError, match="Did not find any shards"):
        resharder_shards(plain)  # its defaults are 8 digits
    five = resharder_shards(plain, "{:05d}.tar", "{:05d}_stats.json")
    assert five == [(name, n) for name, n in json.loads((plain / "sizes.json").read_text()).items()]
    assert [(name[3:], n) for name, n in resharder_shards(full)] == five  # --shard-digits 8: its defaults work
    (runs["base"] / "nosizes").mkdir(exist_ok=True)
    for path in full.glob("*"):  # without sizes.json it reads each shard's successes
        if path.is_file() and path.name != "sizes.json":
            (runs["base"] / "nosizes" / path.name).write_bytes(path.read_bytes())
    (runs["base"] / "nosizes" / "sizes.json").write_text("{}")
    assert resharder_shards(runs["base"] / "nosizes") == resharder_shards(full)


def test_subset_keeps_what_the_resharder_would(runs, tmp_path):
    full = runs["full"]
    samples = [k for stem in stems(full) for k in tar_keys(full / f"{stem}.tar")]
    failed = [r["uid"] for r in fetch_stage_rejects(full)]
    chosen = samples[::2] + failed  # a failed row's uid must select nothing: it is no sample
    subset_file = uid_file(tmp_path / "subset.npy", chosen)
    resharded = resharder_copies(full, resharder_shards(full), subset_file)
    out = tmp_path / "subset"
    assert main(["subset", str(full), "--output", str(out), "--uids", str(subset_file), "--processes", "1",
                 "--quiet"]) == 0
    kept = [k for stem in stems(out) for k in tar_keys(out / f"{stem}.tar")]
    assert [f"{k}-0" for k in kept] == resharded == [f"{k}-0" for k in samples[::2]]
    assert stems(out) == [f"{i:08d}" for i in range(len(stems(out)))]  # named like its input
    for stem in stems(out):
        table = pq.read_table(out / f"{stem}.parquet")
        assert table.column("status").to_pylist() == ["success"] * table.num_rows
    assert resharder_copies(out, resharder_shards(out), subset_file) == resharded
    assert main(["inspect", "validate", str(out)]) == 0


def test_subset_names_follow_the_input_unless_told(runs, tmp_path):
    assert main(["subset", str(runs["plain"]), "--output", str(tmp_path / "five"), "--processes", "1",
                 "--quiet"]) == 0
    assert stems(tmp_path / "five") == [f"{i:05d}" for i in range(len(stems(tmp_path / "five")))]
    assert main(["subset", str(runs["plain"]), "--output", str(tmp_path / "eight"), "--processes", "1",
                 "--quiet", "--shard-digits", "8", "--samples-per-shard", "3"]) == 0
    eight = tmp_path / "eight"
    assert stems(eight) == [f"{i:08d}" for i in range(len(stems(eight)))]
    assert list(json.loads((eight / "sizes.json").read_text())) == [f"{s}.tar" for s in stems(eight)]
    assert json.loads((eight / "subset.json").read_text())["output"]["shard_digits"] == 8


def test_reserved_extra_columns_and_bad_digits_are_one_line(runs, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "p.parquet", [("http://127.0.0.1/a.jpg", "a caption of four words")],
                        status=["x"])
    assert main(["curate", "--input", pairs, "--output", str(tmp_path / "o"), "--extra-cols", "status"]) == 2
    err = capsys.readouterr().err
    assert "--extra-cols status" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["curate", "--input", pairs, "--output", str(tmp_path / "o"), "--shard-digits", "13"])
    assert exit_info.value.code == 2 and "must be within 1..12" in capsys.readouterr().err

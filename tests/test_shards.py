"""The deterministic shard writer: tar layout, WebDataset compatibility, parquet rows, atomic writes, output dir."""

from __future__ import annotations

import datetime
import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import webdataset
from PIL import Image

from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.shards.outcomes import Failure, status_of, success_rows
from aligndata.shards.writer import (
    TarMembers,
    compact_shards,
    OutputDirNotEmpty,
    Sample,
    prepare_output_dir,
    shard_name,
    tar_bytes,
    write_shard,
    write_sizes,
)


def jpeg(seed: int, size=(48, 32)) -> bytes:
    rng = random.Random(seed)
    out = io.BytesIO()
    Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(out, "JPEG", quality=90)
    return out.getvalue()


def make_samples(n: int = 5, with_cls: bool = False) -> list[Sample]:
    samples = []
    for i in range(n):
        key = f"{i:02d}" + "ab" * 15  # 32 chars, like a uid
        meta = {
            "uid": key,
            "url": f"http://127.0.0.1/img/{i}.jpg",
            "caption": f"a photo number {i} — café",
            "width": 48,
            "height": 32,
            "original_width": 480 + i,
            "original_height": 320,
            "sha256": f"{i:064x}",
            "phash": f"{i:016x}",
            "source": "laion",  # an extra input column
        }
        samples.append(
            Sample(key=key, image=jpeg(i), image_ext="jpg", text=meta["caption"], meta=meta,
                   cls=i % 3 if with_cls else None)
        )
    return samples


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(("index", "name"), [(0, "00000"), (42, "00042"), (99999, "99999"), (100000, "100000")])
def test_shard_name(index, name):
    assert shard_name(index) == name


def test_shard_name_refuses_negative():
    with pytest.raises(ValueError, match="-1"):
        shard_name(-1)


@pytest.mark.parametrize(("index", "digits", "name"), [(0, 8, "00000000"), (42, 8, "00000042"),
                                                       (123456789, 8, "123456789"), (7, 1, "7"), (7, 3, "007")])
def test_shard_name_digits(index, digits, name):
    assert shard_name(index, digits) == name


@pytest.mark.parametrize("digits", [0, 13])
def test_shard_name_refuses_odd_digits(digits):
    with pytest.raises(ValueError, match="shard digits"):
        shard_name(0, digits)


# -------------------------------------------------------------------------------------------------- tar


def test_tar_members_are_sorted_adjacent_and_normalised():
    samples = make_samples(4, with_cls=True)
    data = tar_bytes(reversed(samples))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        expected = []
        for sample in sorted(samples, key=lambda s: s.key):
            expected += [f"{sample.key}.jpg", f"{sample.key}.cls", f"{sample.key}.json", f"{sample.key}.txt"]
        assert names == expected
        for member in members:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
            assert member.mode == 0o644 and member.isreg()
            assert "." not in member.name.split(".", 1)[0]
        first = samples[0]
        assert tar.extractfile(f"{first.key}.jpg").read() == first.image
        assert tar.extractfile(f"{first.key}.cls").read() == b"0"
        assert tar.extractfile(f"{first.key}.txt").read().decode("utf-8") == first.text
        raw_json = tar.extractfile(f"{first.key}.json").read()
        assert raw_json == json.dumps(first.meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
        assert "café" in raw_json.decode("utf-8")


def test_cls_member_is_omitted_when_none():
    data = tar_bytes(make_samples(2))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert not [name for name in tar.getnames() if name.endswith(".cls")]


def test_tar_is_identical_for_any_input_order():
    samples = make_samples(8, with_cls=True)
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    assert tar_bytes(samples) == tar_bytes(shuffled) == tar_bytes(reversed(samples))


def test_tar_members_are_the_bytes_tarfile_writes():
    """TarMembers writes its headers itself (one write a member); the bytes stay tarfile's GNU-format ones for the
    same metadata, long (GNU long-name) and non-ASCII names included, at every padding boundary."""
    members = [("a.jpg", b""), ("b.txt", b"x"), ("c.json", b"{" * 511), ("d.jpg", b"\xff" * 512),
               ("e.jpg", bytes(range(256)) * 3), ("k" * 100, b"exactly 100 bytes of name"),
               ("l" * 101 + ".jpg", b"a GNU long name"), ("caf\u00e9-\u732b.txt", "une l\u00e9gende".encode()),
               ("\u732b" * 34 + ".txt", b"101 bytes of UTF-8 name")]
    ours = io.BytesIO()
    with TarMembers(ours) as tar:
        for name, payload in members:
            tar.add(name, payload)
    theirs = io.BytesIO()
    with tarfile.open(fileobj=theirs, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8") as reference:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = \
                len(payload), 0, 0o644, 0, 0, "", ""
            reference.addfile(info, io.BytesIO(payload))
    assert tar.size == len(ours.getvalue()) and ours.getvalue() == theirs.getvalue()
    with tarfile.open(fileobj=io.BytesIO(ours.getvalue())) as back:
        assert [(m.name, back.extractfile(m).read()) for m in back.getmembers()] == members


@pytest.mark.parametrize("key", ["has.dot", "a/b", "", "trailing."])
def test_bad_keys_are_refused_with_the_key_named(key):
    sample = make_samples(1)[0]
    sample.key = key
    with pytest.raises(ValueError, match="sample key"):
        tar_bytes([sample])


def test_duplicate_keys_are_refused():
    sample = make_samples(1)[0]
    with pytest.raises(ValueError, match=f"duplicate sample key '{sample.key}'"):
        tar_bytes([sample, sample])


def test_bad_extension_and_cls_are_refused():
    sample = make_samples(1)[0]
    sample.image_ext = "tar.gz"
    with pytest.raises(ValueError, match="image extension"):
        tar_bytes([sample])
    sample = make_samples(1)[0]
    sample.cls = "3"
    with pytest.raises(ValueError, match="cls must be an int"):
        tar_bytes([sample])


# ------------------------------------------------------------------------------------------- write_shard


def test_write_shard_writes_three_files_and_returns_stats(tmp_path):
    samples = make_samples(5)
    stats = write_shard(str(tmp_path), 3, samples)
    assert files_in(tmp_path) == ["00003.parquet", "00003.tar", "00003_stats.json"]
    assert stats == {
        "shard": "00003",
        "count": 5,
        "successes": 5,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "status_dict": {"success": 5},
        "bytes": (tmp_path / "00003.tar").stat().st_size,
        "meta_columns": ["key", "uid", "url", "caption", "width", "height", "original_width",
                         "original_height", "sha256", "phash", "status", "error_message", "source"],
    }
    on_disk = (tmp_path / "00003_stats.json").read_text(encoding="utf-8")
    assert json.loads(on_disk) == stats and on_disk.endswith("\n")
    assert (tmp_path / "00003.tar").read_bytes() == tar_bytes(samples)


def test_webdataset_reads_the_shard(tmp_path):
    samples = make_samples(4, with_cls=True)
    write_shard(str(tmp_path), 0, samples)
    dataset = webdataset.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False)
    read = list(dataset)
    assert [s["__key__"] for s in read] == sorted(s.key for s in samples)
    by_key = {s.key: s for s in samples}
    for item in read:
        original = by_key[item["__key__"]]
        assert set(item) >= {"jpg", "txt", "json", "cls"}
        assert item["jpg"] == original.image
        assert Image.open(io.BytesIO(item["jpg"])).size == (48, 32)
        assert item["txt"].decode("utf-8") == original.text
        assert json.loads(item["json"]) == original.meta
        assert int(item["cls"]) == original.cls
    decoded = list(webdataset.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False).decode("pil"))
    assert decoded[0]["jpg"].size == (48, 32) and decoded[0]["cls"] == samples[0].cls


def test_parquet_rows_match_the_samples(tmp_path):
    samples = make_samples(5)
    write_shard(str(tmp_path), 0, reversed(samples))
    table = pq.read_table(tmp_path / "00000.parquet")
    rows = table.to_pylist()
    assert [row["key"] for row in rows] == sorted(s.key for s in samples)
    for row, sample in zip(rows, sorted(samples, key=lambda s: s.key)):
        assert row == {"key": sample.key, **sample.meta, "status": "success", "error_message": None}
    assert str(table.schema.field("width").type) == "int64"
    assert str(table.schema.field("status").type) == str(table.schema.field("error_message").type) == "string"
    assert str(table.schema.field("caption").type) == "string"


def test_parquet_tolerates_missing_meta_fields(tmp_path):
    samples = make_samples(3)
    del samples[1].meta["phash"]
    del samples[1].meta["source"]
    samples[2].meta["late_extra"] = 7
    write_shard(str(tmp_path), 0, samples)
    table = pq.read_table(tmp_path / "00000.parquet")
    assert table.column_names[-2:] == ["late_extra", "source"]  # extras after the known columns, sorted
    rows = {row["key"]: row for row in table.to_pylist()}
    assert rows[samples[1].key]["phash"] is None and rows[samples[1].key]["source"] is None
    assert rows[samples[2].key]["late_extra"] == 7 and rows[samples[0].key]["late_extra"] is None


def test_known_columns_keep_their_type_when_all_null(tmp_path):
    samples = make_samples(2)
    for sample in samples:
        sample.meta["page_url"] = None
    write_shard(str(tmp_path), 0, samples)
    assert str(pq.read_table(tmp_path / "00000.parquet").schema.field("page_url").type) == "string"


def test_meta_with_timestamps_is_serialised(tmp_path):
    samples = make_samples(1)
    samples[0].meta["crawled"] = datetime.date(2021, 6, 1)
    write_shard(str(tmp_path), 0, samples)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        meta = json.loads(tar.extractfile(f"{samples[0].key}.json").read())
    assert meta["crawled"] == "2021-06-01"


def test_two_writes_in_different_orders_are_byte_identical(tmp_path):
    samples = make_samples(6, with_cls=True)
    shuffled = samples[:]
    random.Random(3).shuffle(shuffled)
    first, second = tmp_path / "a", tmp_path / "b"
    write_shard(str(first), 0, samples)
    write_shard(str(second), 0, shuffled)
    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_rewriting_a_shard_overwrites_it_identically_and_leaves_no_temp_files(tmp_path):
    samples = make_samples(3)
    write_shard(str(tmp_path), 0, samples)
    before = {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)}
    write_shard(str(tmp_path), 0, samples)  # a retried bundle
    assert {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)} == before
    assert not [name for name in files_in(tmp_path) if ".tmp-" in name]


def test_a_bad_sample_writes_nothing(tmp_path):
    samples = make_samples(3)
    samples[2].key = "bad.key"
    with pytest.raises(ValueError, match="bad.key"):
        write_shard(str(tmp_path / "out"), 0, samples)
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []


def test_empty_shard_is_a_valid_empty_tar(tmp_path):
    stats = write_shard(str(tmp_path), 0, [])
    assert stats["count"] == 0
    with tarfile.open(tmp_path / "00000.tar") as tar:
        assert tar.getnames() == []
    assert pq.read_table(tmp_path / "00000.parquet").num_rows == 0


# ------------------------------------------------------------------------ failed rows (img2dataset's layout)


def make_failures() -> list[Failure]:
    """Rows of the shard that did not become samples, one per kind of reason."""
    cases = [("download_failed", "http_404"), ("robots_disallowed", "x-robots-tag:noai"),
             ("blocked_address", "blocked:10.0.0.1"), ("decode_failed", "UnidentifiedImageError"),
             ("image_too_small", "300x200"), ("image_too_small", "300x200"), ("aspect_ratio_too_large", "603x201"),
             ("nsfw", "")]
    failures = []
    for i, (reason, detail) in enumerate(cases):
        key = f"f{i}" + "cd" * 15
        meta = {"uid": key, "url": f"http://127.0.0.1/bad/{i}.jpg", "caption": f"a failed photo {i}",
                "source": "laion"}  # the row's own fields, as make_samples' (without page_url)
        failures.append(Failure(key, meta, reason, detail))
    return failures


def test_reasons_map_onto_img2dataset_statuses():
    assert {reason: status_of(reason) for reason in ("download_failed", "robots_disallowed", "blocked_address")} \
        == dict.fromkeys(("download_failed", "robots_disallowed", "blocked_address"), "failed_to_download")
    resize = ("image_file_too_small", "decode_failed", "image_too_small", "aspect_ratio_too_large",
              "eval_set_duplicate", "nsfw")
    assert {status_of(reason) for reason in resize} == {"failed_to_resize"}
    with pytest.raises(ValueError, match="text_too_short"):
        status_of("text_too_short")  # decided before shards are assigned: never a shard's failure


def test_failures_are_counted_the_img2dataset_way(tmp_path):
    samples, failures = make_samples(3), make_failures()
    stats = write_shard(str(tmp_path), 0, samples, reversed(failures))
    assert (stats["count"], stats["successes"], stats["failed_to_download"], stats["failed_to_resize"]) == \
        (3 + 8, 3, 3, 5)
    assert stats["status_dict"] == {
        "aspect_ratio_too_large: 603x201": 1, "blocked_address: blocked:10.0.0.1": 1,
        "decode_failed: UnidentifiedImageError": 1, "download_failed: http_404": 1,
        "image_too_small: 300x200": 2, "nsfw": 1, "robots_disallowed: x-robots-tag:noai": 1, "success": 3}
    assert sum(stats["status_dict"].values()) == stats["count"]
    assert not {"start_time", "end_time", "duration"} & set(stats)  # wall clock only when asked for
    table = pq.read_table(tmp_path / "00000.parquet")
    assert table.column("status").to_pylist() == ["success"] * 3  # failed rows only when asked for
    assert (tmp_path / "00000.tar").read_bytes() == tar_bytes(samples)


def test_failed_rows_follow_the_samples_in_the_parquet(tmp_path):
    samples, failures = make_samples(3), make_failures()
    plain = write_shard(str(tmp_path / "plain"), 0, samples, failures)
    stats = write_shard(str(tmp_path / "full"), 0, samples, reversed(failures), failed_rows=True)
    assert {k: v for k, v in stats.items() if k != "meta_columns"} == \
        {k: v for k, v in plain.items() if k != "meta_columns"}
    assert (tmp_path / "full" / "00000.tar").read_bytes() == (tmp_path / "plain" / "00000.tar").read_bytes()
    table = pq.read_table(tmp_path / "full" / "00000.parquet")
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == sorted(s.key for s in samples) + sorted(f.key for f in failures)
    for row, failure in zip(rows[3:], sorted(failures, key=lambda f: f.key)):
        assert row["status"] == failure.status and row["error_message"] == failure.error_message
        assert (row["url"], row["caption"], row["source"]) == (failure.meta["url"], failure.meta["caption"], "laion")
        assert row["width"] is row["sha256"] is None
    assert str(table.schema.field("width").type) == "int64"  # the image fields keep their types, null here
    # as code written against img2dataset reads it (pandas' df[df.status == "success"], in pyarrow)
    kept = table.filter(pc.field("status") == "success")
    assert kept.column("key").to_pylist() == sorted(s.key for s in samples)
    assert success_rows(table).to_pylist() == pq.read_table(tmp_path / "plain" / "00000.parquet").to_pylist()


def test_shard_times_when_asked_for(tmp_path):
    stats = write_shard(str(tmp_path), 0, make_samples(2), started=1_700_000_000.0)
    assert stats["start_time"] == 1_700_000_000.0 < stats["end_time"]
    assert stats["duration"] == stats["end_time"] - stats["start_time"]
    assert json.loads((tmp_path / "00000_stats.json").read_text()) == stats


def test_eight_digit_names(tmp_path):
    stats = write_shard(str(tmp_path), 3, make_samples(2), digits=8)
    assert files_in(tmp_path) == ["00000003.parquet", "00000003.tar", "00000003_stats.json"]
    assert stats["shard"] == "00000003"


# ----------------------------------------------------------------------------------------- atomic writes


def test_write_bytes_atomic_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    write_bytes_atomic(str(target), b"first")
    write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert files_in(target.parent) == ["file.bin"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "00000.tar"
    target.write_bytes(b"complete old shard")
    from aligndata.shards import writer as shards

    def exploding_write_tar(fileobj, ordered):  # a crash half-way through writing the tar
        fileobj.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(shards, "_write_tar", exploding_write_tar)
    with pytest.raises(OSError, match="disk full"):
        write_shard(str(tmp_path), 0, make_samples(2))
    assert target.read_bytes() == b"complete old shard"
    assert files_in(tmp_path) == ["00000.tar"]


def test_write_json_atomic_is_sorted_indented_with_newline(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(str(path), {"b": 1, "a": {"d": "é", "c": [1, 2]}})
    assert path.read_text(encoding="utf-8") == (
        '{\n  "a": {\n    "c": [\n      1,\n      2\n    ],\n    "d": "é"\n  },\n  "b": 1\n}\n'
    )


def test_write_sizes(tmp_path):
    write_sizes(str(tmp_path), {"00001.tar": 3, "00000.tar": 10})
    text = (tmp_path / "sizes.json").read_text()
    assert json.loads(text) == {"00000.tar": 10, "00001.tar": 3}
    assert text.index("00000.tar") < text.index("00001.tar")


# ------------------------------------------------------------------------------------------- output dir


def test_prepare_creates_missing_and_accepts_empty_dirs(tmp_path):
    target = tmp_path / "a" / "b"
    assert prepare_output_dir(str(target), overwrite=False) == []
    assert target.is_dir()
    assert prepare_output_dir(str(target), overwrite=False) == []


@pytest.mark.parametrize("leftover", ["notes.txt", ".hidden", "sub/00000.tar"])
def test_prepare_refuses_a_non_empty_dir_without_overwrite(tmp_path, leftover):
    (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / leftover).write_text("mine")
    with pytest.raises(OutputDirNotEmpty) as err:
        prepare_output_dir(str(tmp_path), overwrite=False)
    assert str(tmp_path) in str(err.value) and "--overwrite" in str(err.value)
    assert (tmp_path / leftover).read_text() == "mine"


def test_overwrite_deletes_only_what_aligndata_owns(tmp_path):
    write_shard(str(tmp_path), 0, make_samples(2))
    write_shard(str(tmp_path), 100000, make_samples(1))
    write_sizes(str(tmp_path), {"00000.tar": 2})
    owned = ["report.json", "rejected.parquet", "candidates.parquet", "config.json", "report.html", "classnames.txt",
             ".00001.tar.tmp-" + "0" * 32, "rejected/part-00000-of-00002.parquet",
             "rejected/part-00001-of-00002.parquet", "candidates/.part-00000-of-00001.parquet.tmp-" + "1" * 32]
    kept = ["notes.txt", "holiday.tar", "data.parquet", "sub/00000.tar", "rejected/mine.txt"]
    for name in owned + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    deleted = prepare_output_dir(str(tmp_path), overwrite=True)
    assert len(deleted) == 6 + 1 + len(owned)  # two shards x 3 files, sizes.json, the rest
    assert files_in(tmp_path) == ["candidates", "data.parquet", "holiday.tar", "notes.txt", "rejected", "sub"]
    assert files_in(tmp_path / "rejected") == ["mine.txt"] and files_in(tmp_path / "candidates") == []
    assert (tmp_path / "sub" / "00000.tar").exists()


def test_compact_shards_keeps_the_digits_and_drops_all_failed_shards(tmp_path):
    out = str(tmp_path)
    stats = [write_shard(out, 0, [], make_failures()[:2], digits=8, failed_rows=True),
             write_shard(out, 1, make_samples(2), make_failures()[2:], digits=8, failed_rows=True)]
    assert (stats[0]["count"], stats[0]["successes"]) == (2, 0)
    kept = compact_shards(out, stats, digits=8)
    assert [(s["shard"], s["count"], s["successes"]) for s in kept] == [("00000000", 2 + 6, 2)]
    assert files_in(tmp_path) == ["00000000.parquet", "00000000.tar", "00000000_stats.json"]
    assert pq.read_metadata(tmp_path / "00000000.parquet").num_rows == 8  # its failed rows moved with it


def test_overwrite_owns_the_shard_names_of_any_digits(tmp_path):
    names = ["001.tar", "001.parquet", "001_stats.json", "00001.tar", "00000001.tar"]
    for name in names:
        (tmp_path / name).write_text("x")
    deleted = {Path(p).name for p in prepare_output_dir(str(tmp_path), overwrite=True, shard_digits=8)}
    assert deleted == {"00001.tar", "00000001.tar"}  # a 5-digit run's shards go too; 3 digits are not ours here
    deleted = {Path(p).name for p in prepare_output_dir(str(tmp_path), overwrite=True, shard_digits=3)}
    assert deleted == {"001.tar", "001.parquet", "001_stats.json"}


def test_compact_shards_drops_empty_ones_and_renumbers(tmp_path):
    out = str(tmp_path)
    stats = [write_shard(out, 0, make_samples(2)), write_shard(out, 1, []), write_shard(out, 2, make_samples(3)),
             write_shard(out, 3, [])]
    third = (tmp_path / "00002.tar").read_bytes()
    kept = compact_shards(out, stats)
    assert [(s["shard"], s["count"]) for s in kept] == [("00000", 2), ("00001", 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json"]
    assert (tmp_path / "00001.tar").read_bytes() == third
    assert json.loads((tmp_path / "00001_stats.json").read_text())["shard"] == "00001"
    assert compact_shards(out, kept) == kept  # nothing empty: nothing changes

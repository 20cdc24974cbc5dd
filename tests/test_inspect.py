"""`aligndata inspect ...` on a real curate output and on hand-broken shard sets."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFont

from aligndata.commands import inspect as commands
from aligndata.inspect.grid import choose, wrap
from aligndata.shards.reader import iter_samples
from aligndata.shards.spec import ShardSetError, resolve
from aligndata.inspect.show import printable


@pytest.fixture(scope="module")
def curated(example_output):
    """A real curate output (3 shards, 18 samples) made by `aligndata example`; shared, so only read it."""
    out = example_output
    # 22 rows to fetch at 10 per shard -> 3 URL-hash ranges; the corpus and its port are fixed (example.EXAMPLE_PORT)
    report = (out / "report.json").read_text() if (out / "report.json").exists() else "no report.json"
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"], report
    return out


@pytest.fixture(scope="module")
def real_samples(curated):
    """[(key, image bytes, meta dict, caption)] of every sample, read with the stdlib tarfile."""
    out = []
    for tar_path in sorted(curated.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(files):
            if name.endswith(".json"):
                key = name[:-5]
                out.append((key, files[key + ".jpg"], json.loads(files[name]), files[key + ".txt"].decode()))
    return out


def run(capsys, *argv):
    rc = commands.main(["inspect", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def write_tar(path, members):
    """members: (name, bytes) for regular files, or a ready TarInfo (links) as (TarInfo, None)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members:
            if isinstance(name, tarfile.TarInfo):
                tar.addfile(name)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def sample_members(key, image, meta, caption):
    meta = dict(meta, key=key, uid=key, caption=caption)
    return [(f"{key}.jpg", image), (f"{key}.json", json.dumps(meta).encode()), (f"{key}.txt", caption.encode())]


def problems_of(capsys, shards_dir, *extra):
    rc, out, err = run(capsys, "validate", shards_dir, *extra)
    lines = [line.split("\t") for line in out.splitlines() if line]
    return rc, lines, err


# ------------------------------------------------------------------------------------------------ SHARDS


def test_shards_spec_forms_resolve_to_the_same_tars(curated):
    tars = [str(p) for p in sorted(curated.glob("*.tar"))]
    assert len(tars) == 3
    assert resolve(str(curated)).paths == tars
    assert resolve(str(curated / "*.tar")).paths == tars
    assert resolve(str(curated / "{00000..00002}.tar")).paths == tars
    assert resolve("file://" + str(curated / "00001.tar")).paths == [tars[1]]
    with pytest.raises(ShardSetError, match="00003.tar"):  # a range past the end names what is missing
        resolve(str(curated / "{00000..00003}.tar"))
    with pytest.raises(ShardSetError, match="no such file"):
        resolve(str(curated / "nope"))
    with pytest.raises(ShardSetError, match="no .tar shards"):
        resolve(str(curated / "*.nothing"))


def test_fsspec_url_reads_like_a_local_directory(curated, capsys):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in curated.rglob("*"):
        if path.is_file():
            fs.pipe(f"/insp/{path.relative_to(curated).as_posix()}", path.read_bytes())
    try:
        rc, out_url, _ = run(capsys, "summary", "memory://insp", "--json")
        assert rc == 0
        rc, out_local, _ = run(capsys, "summary", curated, "--json")
        url, local = json.loads(out_url), json.loads(out_local)
        assert url["shards"] == 3 and url["samples"] == local["samples"] and url["bytes"] == local["bytes"]
        assert run(capsys, "validate", "memory://insp/{00000..00002}.tar")[0] == 0
    finally:
        fs.rm("/insp", recursive=True)


def test_nothing_matched_is_a_usage_error(tmp_path, capsys):
    rc, _, err = run(capsys, "summary", tmp_path / "missing")
    assert rc == 2 and "error:" in err and "missing" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ summary


def test_summary_from_parquet_equals_summary_from_tars(curated, real_samples, capsys):
    rc, out, _ = run(capsys, "summary", curated, "--json")
    fast = json.loads(out)
    rc2, out2, _ = run(capsys, "summary", curated, "--json", "--scan")
    slow = json.loads(out2)
    assert rc == rc2 == 0
    assert fast["source"] == "parquet" and slow["source"] == "tars"
    report = json.loads((curated / "report.json").read_text())
    assert fast["samples"] == slow["samples"] == report["kept"] == len(real_samples)
    assert fast["bytes"] == sum(p.stat().st_size for p in curated.glob("*.tar"))
    assert fast["distributions"] == slow["distributions"]
    assert fast["top_words"] == slow["top_words"] and fast["top_domains"] == [["127.0.0.1", len(real_samples)]]
    widths = sorted(meta["original_width"] for _, _, meta, _ in real_samples)
    d = fast["distributions"]["original_width"]
    assert (d["min"], d["max"], d["count"]) == (widths[0], widths[-1], len(widths))
    assert all(1 <= x for x in (d["min"],)) and fast["distributions"]["aspect_ratio"]["max"] < 3
    assert "the" not in dict(fast["top_words"])  # function words are left out


def test_summary_text_output(curated, capsys):
    rc, out, _ = run(capsys, "summary", curated)
    assert rc == 0
    assert re.search(r"^samples\s+18$", out, re.M) and "caption_words" in out and "top domains: 127.0.0.1" in out


# ------------------------------------------------------------------------------------- show, head, grep


def test_show_by_key_and_by_index_and_save_image(curated, real_samples, tmp_path, capsys):
    key, image, meta, caption = real_samples[4]
    rc, out, _ = run(capsys, "show", curated, key)
    assert rc == 0 and key in out and caption in out and f'"url": "{meta["url"]}"' in out
    assert f"{meta['width']}x{meta['height']}" in out

    saved = tmp_path / "img.jpg"
    rc, out, _ = run(capsys, "show", curated, "--index", 4, "--save-image", saved)
    assert rc == 0 and key in out
    assert saved.read_bytes() == image
    assert Image.open(saved).size == (meta["width"], meta["height"])

    last = len(real_samples) - 1
    assert key in run(capsys, "show", curated, "--index", 4)[1]
    assert real_samples[last][0] in run(capsys, "show", curated, "--index", last)[1]
    rc, _, err = run(capsys, "show", curated, "--index", last + 1)
    assert rc == 1 and "past the end" in err
    assert run(capsys, "show", curated, "f" * 32)[0] == 1
    assert run(capsys, "show", curated)[0] == 2  # neither KEY nor --index
    assert run(capsys, "show", curated, key, "--save-image", tmp_path)[0] == 2  # a directory


def test_head(curated, real_samples, capsys):
    rc, out, _ = run(capsys, "head", curated, "-n", 2)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert lines[0].split("\t")[1] == real_samples[0][0] and lines[0].endswith(real_samples[0][3])
    assert run(capsys, "head", curated, "-n", 0)[1] == ""
    assert len(run(capsys, "head", curated, "-n", 1000)[1].splitlines()) == len(real_samples)


def test_grep_matches_python_search_both_ways(curated, real_samples, capsys):
    expected = sorted(k for k, _, _, c in real_samples if re.search("(?i)RED|blue", c))
    assert expected
    for extra in ([], ["--scan"]):
        rc, out, _ = run(capsys, "grep", curated, "RED|blue", "-i", *extra)
        assert rc == 0
        assert sorted(line.split("\t")[1] for line in out.splitlines()) == expected
    rc, out, _ = run(capsys, "grep", curated, "RED|blue", "-i", "-m", 1)
    assert len(out.splitlines()) == 1
    assert run(capsys, "grep", curated, "no caption says this")[0] == 1
    rc, _, err = run(capsys, "grep", curated, "(unclosed")
    assert rc == 2 and "invalid regular expression" in err


def test_printable_escapes_terminal_control_characters():
    assert printable("red \x1b[2Jcircle\n") == "red \\x1b[2Jcircle\\n"
    assert printable("café ✓") == "café ✓"


# ------------------------------------------------------------------------------------------------ validate


def test_validate_clean_output(curated, capsys):
    for extra in ([], ["--deep"]):
        rc, out, err = run(capsys, "validate", curated, *extra)
        assert rc == 0 and out == "" and "18 sample(s)" in err and ": ok" in err


def test_validate_warns_about_shards_smaller_than_a_batch_per_worker(curated, capsys):
    sizes = json.loads((curated / "sizes.json").read_text())
    threshold = max(sizes.values())  # every shard but the largest is smaller
    rc, out, err = run(capsys, "validate", curated, "--min-samples", threshold)
    small = sorted(name[:-4] for name, n in sizes.items() if n < threshold)
    assert rc == 0 and out == "" and small  # a warning, not a contract problem
    assert sorted(re.findall(r"^warning: (\d{5}): \d+ sample", err, re.M)) == small
    rc, out, _ = run(capsys, "validate", curated, "--min-samples", threshold, "--json")
    assert rc == 0 and len(json.loads(out)["warnings"]) == len(small)
    assert "warning" not in run(capsys, "validate", curated, "--min-samples", 1)[2]


@pytest.fixture
def broken(tmp_path, curated):
    """A fresh copy of the curated output to break."""
    target = tmp_path / "shards"
    shutil.copytree(curated, target)
    return target


def _rewrite_shard(directory, name, edit):
    """Rewrite NAME.tar through edit(list of (name, bytes)) -> list."""
    path = directory / f"{name}.tar"
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    write_tar(path, edit(members))


def test_truncated_tars_are_reported(broken, capsys):
    # the two shards with the most samples, whatever the spread over shards (it follows the URLs' hashes)
    sizes = json.loads((broken / "sizes.json").read_text())
    mid_payload, at_boundary = (name[:-4] for name in sorted(sizes, key=lambda n: (-sizes[n], n))[:2])
    raw = (broken / f"{mid_payload}.tar").read_bytes()
    with tarfile.open(broken / f"{mid_payload}.tar") as tar:
        second_image = tar.getmembers()[3]
    (broken / f"{mid_payload}.tar").write_bytes(raw[:second_image.offset_data + 100])  # inside its payload
    with tarfile.open(broken / f"{at_boundary}.tar") as tar:
        members = tar.getmembers()
    assert len(members) >= 6, f"{at_boundary}.tar needs two samples to cut between them: {sizes}"
    cut = members[3].offset  # exactly at a member boundary: tarfile alone would say nothing
    raw1 = (broken / f"{at_boundary}.tar").read_bytes()
    (broken / f"{at_boundary}.tar").write_bytes(raw1[:cut])
    rc, lines, _ = problems_of(capsys, broken)
    assert rc == 1
    text = "\n".join("\t".join(line) for line in lines)
    assert re.search(rf"^{mid_payload}\t-\t.*\(truncated( file| or corrupt)\)$", text, re.M)
    assert re.search(rf"^{at_boundary}\t-\tno end-of-archive marker after the last member \(truncated file\)$",
                     text, re.M)
    # ...and the companions disagree with what could be read
    assert f"{at_boundary}\t-\tsizes.json says {sizes[at_boundary + '.tar']} samples, the tar has 1" in text


def test_sample_structure_problems(broken, real_samples, capsys):
    def edit(members):
        out = []
        for name, payload in members:
            key, ext = name.split(".", 1)
            if ext == "txt" and key == members[0][0].split(".")[0]:
                continue  # first sample: no .txt
            if ext == "json" and key == members[3][0].split(".")[0]:
                payload = json.dumps(dict(json.loads(payload), caption="something else")).encode()
                out.append((f"{key}.cls", b"seven"))  # members stay adjacent: image, cls, json, txt
            out.append((name, payload))
        return out

    _rewrite_shard(broken, "00000", edit)
    first, second = real_samples[0][0], real_samples[1][0]
    rc, lines, _ = problems_of(capsys, broken)
    assert rc == 1
    assert ["00000", first, "sample lacks txt (has jpg, json)"] in lines
    assert any(line[:2] == ["00000", second] and line[2].startswith(".json caption 'something else' differs")
               for line in lines)
    assert ["00000", second, ".cls is not an integer: 'seven'"] in lines


def test_duplicate_dotted_and_non_adjacent_keys(tmp_path, real_samples, capsys):
    (k1, img1, m1, c1), (k2, img2, m2, c2) = real_samples[:2]
    write_tar(tmp_path / "00000.tar", sample_members(k1, img1, m1, c1) + sample_members(k2, img2, m2, c2))
    dotted = "abc.def"
    write_tar(tmp_path / "00001.tar",
              sample_members(k1, img1, m1, c1)  # k1 again, in another shard
              + [(f"{dotted}.jpg", img2), (f"{dotted}.json", json.dumps(m2).encode()), (f"{dotted}.txt", b"x")])
    members_k2 = sample_members(k2, img2, m2, c2)
    write_tar(tmp_path / "00002.tar", members_k2[:1] + sample_members(
        real_samples[2][0], *real_samples[2][1:]) + members_k2[1:])
    rc, lines, _ = problems_of(capsys, tmp_path)
    assert rc == 1
    assert ["00001", k1, "duplicate key: also in shard 00000"] in lines
    assert any(line[:2] == ["00001", "abc"] and line[2].startswith("dotted key: member 'abc.def.jpg'")
               for line in lines)
    assert ["00002", k2, "members of this sample are not adjacent (webdataset would read two samples with "
                         "the same key)"] in lines
    assert any(line[:2] == ["00002", k2] and line[2].startswith("sample lacks txt and json") for line in lines)


def test_companion_files_must_agree(broken, real_samples, capsys):
    table = pq.read_table(broken / "00000.parquet")
    pq.write_table(table.slice(1), broken / "00000.parquet")  # one row short
    stats = json.loads((broken / "00001_stats.json").read_text())
    (broken / "00001_stats.json").write_text(json.dumps(dict(stats, count=99, successes=98)))
    sizes = json.loads((broken / "sizes.json").read_text())
    (broken / "sizes.json").write_text(json.dumps(dict(sizes, **{"00002.tar": sizes["00002.tar"] + 1,
                                                                 "00009.tar": 1})))
    os.remove(broken / "00002.parquet")
    rc, lines, _ = problems_of(capsys, broken)
    assert rc == 1
    n0, n1, n2 = sizes["00000.tar"], sizes["00001.tar"], sizes["00002.tar"]
    assert ["00000", "-", f"00000.parquet has {n0 - 1} sample rows, the tar {n0} samples"] in lines
    assert ["00000", table.column("key")[0].as_py(), "in the tar but not in 00000.parquet"] in lines
    assert ["00001", "-", f"00001_stats.json says successes 98, the tar has {n1} samples"] in lines
    # img2dataset's count: every row assigned to the shard, successes + failed_to_download + failed_to_resize
    failed = (stats["failed_to_download"], stats["failed_to_resize"])
    assert ["00001", "-", "00001_stats.json says count 99, not successes + failed_to_download + "
                          f"failed_to_resize (98 + {failed[0]} + {failed[1]})"] in lines
    assert ["00001", "-", f"00001_stats.json's status_dict counts {n1 + sum(failed)} rows, its count 99"] in lines
    assert ["00002", "-", f"sizes.json says {n2 + 1} samples, the tar has {n2}"] in lines
    assert ["sizes.json", "-", "sizes.json lists 00009.tar, which does not exist"] in lines
    assert ["00002", "-", "00002.parquet is missing (other shards have one)"] in lines
    rc, out, _ = run(capsys, "validate", broken, "--json")
    assert rc == 1 and len(json.loads(out)["problems"]) == len(lines)


def test_undecodable_image_needs_deep(broken, real_samples, capsys):
    def edit(members):
        return [(n, p[:300] if n.endswith(".jpg") and i == 0 else p) for i, (n, p) in enumerate(members)]

    _rewrite_shard(broken, "00000", edit)
    # the tar was rewritten, so its byte count changed: drop that one stat so only the image remains at issue
    stats = json.loads((broken / "00000_stats.json").read_text())
    del stats["bytes"]
    (broken / "00000_stats.json").write_text(json.dumps(stats))
    assert run(capsys, "validate", broken)[0] == 0
    rc, lines, _ = problems_of(capsys, broken, "--deep")
    assert rc == 1 and len(lines) == 1
    assert lines[0][:2] == ["00000", real_samples[0][0]] and lines[0][2].startswith("image does not decode")


def test_hostile_members_are_reported_never_followed(tmp_path, real_samples, capsys, monkeypatch):
    key, image, meta, caption = real_samples[0]
    link = tarfile.TarInfo("evil.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("hard.txt")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside"
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "00000.tar", [("../evil.txt", b"escape"), ("/abs.txt", b"absolute"), (link, None),
                                     (hard, None)] + sample_members(key, image, meta, caption))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out_file = cwd / "all.jsonl"
    for argv in (["validate", shards, "--deep"], ["summary", shards, "--scan"], ["head", shards],
                 ["export", shards, "--format", "jsonl", "--out", out_file, "--with-images"],
                 ["grid", shards, "--out", cwd / "g.png", "-n", "4"]):
        run(capsys, *argv)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {out_file.relative_to(tmp_path), (cwd / "g.png").relative_to(tmp_path)}
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/abs.txt")

    rc, lines, _ = problems_of(capsys, shards)
    assert rc == 1
    problems = [line[2] for line in lines]
    assert "member '../evil.txt' has a '..' component: skipped, never extracted" in problems
    assert "member '/abs.txt' has an absolute path: skipped, never extracted" in problems
    assert "member 'evil.jpg' is a symbolic link to '/etc/passwd': skipped, never followed" in problems
    assert "member 'hard.txt' is a hard link to '../../outside': skipped, never followed" in problems
    # the genuine sample beside them is still read
    exported = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [row["key"] for row in exported] == [key]


def test_reader_keeps_going_after_reported_problems(real_samples):
    key, image, meta, caption = real_samples[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in [("README", b"no extension")] + sample_members(key, image, meta, caption):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    problems = []
    samples = list(iter_samples(io.BytesIO(buffer.getvalue()), "s", on_problem=lambda *p: problems.append(p),
                                check_end=True))
    assert [s.key for s in samples] == [key] and samples[0].image == image and samples[0].text == caption
    assert problems == [("s", None, "member 'README' has no extension: not part of any sample")]


# ------------------------------------------------------------------------------------------------ grid


def test_grid_contact_sheet(curated, tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc, _, _ = run(capsys, "grid", curated, "--out", out, "-n", 6, "--seed", 3, "--thumb", 64)
    assert rc == 0
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.size[0] == 3 * (64 + 16)  # ceil(sqrt(6)) = 3 columns
    assert len(sheet.convert("RGB").getcolors(1 << 20)) > 50  # thumbnails, not a blank page
    again = tmp_path / "again.png"
    run(capsys, "grid", curated, "--out", again, "-n", 6, "--seed", 3, "--thumb", 64)
    assert again.read_bytes() == out.read_bytes()  # same seed, same sheet
    shards = resolve(str(curated))
    picks = {seed: [s.key for s in choose(shards, 6, seed)] for seed in range(4)}
    assert len({tuple(v) for v in picks.values()}) > 1 and all(len(v) == 6 for v in picks.values())
    assert len(choose(shards, 100, 0)) == 18  # n above the set size: everything, once
    assert run(capsys, "grid", curated, "--out", tmp_path)[0] == 2


def test_wrap_fits_width_and_marks_cut_text():
    font = ImageFont.load_default(size=12)
    lines = wrap("a quick brown fox jumps over the lazy dog " * 4 + "x" * 80, font, 100, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 100 for line in lines)
    assert wrap("short", font, 100, 3) == ["short"]
    assert all(font.getlength(line) <= 40 for line in wrap("y" * 50, font, 40, 10))


# ------------------------------------------------------------------------------------------------ export


def test_export_parquet_with_images(curated, real_samples, tmp_path, capsys):
    out = tmp_path / "all.parquet"
    rc, _, err = run(capsys, "export", curated, "--format", "parquet", "--out", out, "--with-images")
    assert rc == 0 and "wrote 18 row(s)" in err
    table = pq.read_table(out)
    rows = {r["key"]: r for r in table.to_pylist()}
    assert len(rows) == len(real_samples)
    for key, image, meta, caption in real_samples:
        row = rows[key]
        assert row["image"] == image and row["caption"] == caption and row["image_ext"] == "jpg"
        assert row["width"] == meta["width"] and json.loads(row["json"])["kind"] == "good"
    assert run(capsys, "export", curated, "--format", "parquet", "--out", tmp_path / "x.parquet")[0] == 0
    assert "image" not in pq.read_schema(tmp_path / "x.parquet").names


def test_export_parquet_types_the_language_fields(curated, tmp_path, capsys):
    from aligndata.shards.contract import LANGUAGE_COLUMNS
    from aligndata.shards.writer import Sample, write_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    samples = [Sample(key=f"k{i}", image=b"x", image_ext="jpg", text="a caption",
                      meta={"uid": f"k{i}", "language": lang, "language_score": score})
               for i, (lang, score) in enumerate([("en", 1), ("de", 0.75)])]  # a whole-number score stays a double
    write_shard(str(shards), 0, samples, typed=LANGUAGE_COLUMNS)
    out = tmp_path / "lang.parquet"
    assert run(capsys, "export", shards, "--format", "parquet", "--out", out)[0] == 0
    table = pq.read_table(out)
    assert table.schema.field("language").type == pa.string()
    assert table.schema.field("language_score").type == pa.float64()
    assert table.column("language").to_pylist() == ["en", "de"]
    assert table.column("language_score").to_pylist() == [1.0, 0.75]
    # shards curated without detection: the same columns, null
    assert run(capsys, "export", curated, "--format", "parquet", "--out", tmp_path / "plain.parquet")[0] == 0
    plain = pq.read_table(tmp_path / "plain.parquet")
    assert plain.schema == table.schema and set(plain.column("language_score").to_pylist()) == {None}
    # a score that is not a number is refused, naming the sample
    bad = tmp_path / "bad"
    bad.mkdir()
    write_shard(str(bad), 0, [Sample(key="k9", image=b"x", image_ext="jpg", text="t",
                                     meta={"uid": "k9", "language": "en", "language_score": "high"})])
    rc, _, err = run(capsys, "export", bad, "--format", "parquet", "--out", tmp_path / "bad.parquet")
    assert rc == 1 and "key k9" in err and "language_score" in err and "not a number" in err


def test_export_jsonl(curated, real_samples, tmp_path, capsys):
    out = tmp_path / "all.jsonl"
    assert run(capsys, "export", curated, "--format", "jsonl", "--out", out)[0] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == [k for k, _, _, _ in real_samples]
    assert all(r["kind"] == "good" and "image_base64" not in r for r in rows)


def test_export_refuses_to_overwrite_its_input(curated, tmp_path, capsys, broken):
    before = (broken / "00000.parquet").read_bytes()
    rc, _, err = run(capsys, "export", broken, "--format", "parquet", "--out", broken / "00000.parquet")
    assert rc == 2 and "shard set's own files" in err
    assert (broken / "00000.parquet").read_bytes() == before
    assert run(capsys, "export", broken, "--format", "jsonl", "--out", tmp_path)[0] == 2
    with pytest.raises(SystemExit) as exc:  # argparse: an unknown format is a usage error
        commands.main(["inspect", "export", str(broken), "--format", "csv", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_export_columns_match_the_shard_writer():
    from aligndata.inspect.export import META_COLUMNS
    from aligndata.shards.writer import KNOWN_COLUMNS

    from aligndata.shards.outcomes import STATUS_COLUMNS

    assert {**META_COLUMNS, **STATUS_COLUMNS} == KNOWN_COLUMNS  # exported samples have no outcome: all succeeded

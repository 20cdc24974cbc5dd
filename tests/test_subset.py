"""`aligndata subset`: filters alone and combined, the copy (member bytes, parquet rows, stats, sizes.json),
determinism, the exact top fraction, --where's safety, and DataComp's subset format both ways.

The source is a copy of the shared example curate output (3 shards, 18 real samples) with what the other commands
would add beside it: a language / language_score column in each parquet (another engineer's `language`),
NNNNN_scores.parquet files (uid, score, model: `aligndata score`'s layout) and duplicates/part-00000.parquet
(uid, group, keep, kind: `aligndata dedup`'s layout), all made here.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import iter_samples

from aligndata.cli import main
from aligndata.subsets import SubsetError
from aligndata.subsets import scores as scoring
from aligndata.subsets.uids import UidSet, hex_to_pairs, npy_bytes, pairs_to_hex, read_uid_list
from aligndata.subsets.where import compile_where

# Scores with ties, -0.0 beside 0.0, and the top-fraction boundaries below falling inside the 0.8 tie.
SCORE_VALUES = [0.9, 0.8, 0.8, 0.8, 0.8, 0.5, 0.5, 0.25, 0.0, -0.0, -0.5, 0.1, 0.7, 0.7, 0.3, 0.6, 0.05, 0.8]
LANGUAGES = ["en", "en", "de", None, "en", "fr"]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def source(example_output, tmp_path_factory) -> Path:
    """The example shards with languages, scores and a dedup listing beside them (shared: do not change)."""
    src = tmp_path_factory.mktemp("subset") / "src"
    src.mkdir()
    for path in sorted(example_output.iterdir()):
        if path.suffix in (".tar", ".parquet") or path.name.endswith("_stats.json") or path.name == "sizes.json":
            shutil.copy(path, src / path.name)
    position = 0
    for parquet in sorted(src.glob("[0-9]*.parquet")):
        table = pq.read_table(parquet)
        n = table.num_rows
        languages = [LANGUAGES[(position + i) % len(LANGUAGES)] for i in range(n)]
        table = table.append_column("language", pa.array(languages, pa.string()))
        table = table.append_column("language_score", pa.array([0.5 + 0.02 * (position + i) for i in range(n)]))
        pq.write_table(table, parquet)
        uids = table.column("uid").to_pylist()
        # Scores follow reverse shard order, not uid order, so the uid tie-break is really exercised.
        values = [SCORE_VALUES[len(SCORE_VALUES) - 1 - (position + i)] for i in range(n)]
        pq.write_table(pa.table({"uid": uids, "score": pa.array(values, pa.float32()), "model": ["clip-test"] * n}),
                       src / f"{parquet.stem}_scores.parquet")
        position += n
    assert position == len(SCORE_VALUES)
    rows = all_rows(src)
    # Two duplicate groups: keep the first uid of each, drop the others.
    groups = [[rows[0]["uid"], rows[5]["uid"], rows[9]["uid"]], [rows[2]["uid"], rows[16]["uid"]]]
    listing = [(uid, g, i == 0, "exact" if g == 0 else "near") for g, group in enumerate(groups)
               for i, uid in enumerate(group)]
    (src / "duplicates").mkdir()
    pq.write_table(pa.table({"uid": [r[0] for r in listing], "group": pa.array([r[1] for r in listing], pa.int64()),
                             "keep": [r[2] for r in listing], "kind": [r[3] for r in listing]}),
                   src / "duplicates" / "part-00000.parquet")
    return src


def all_rows(directory: Path) -> list[dict]:
    """Every parquet row of a shard directory, in shard then row order."""
    rows = []
    for parquet in sorted(directory.glob("[0-9]*.parquet")):
        if not parquet.name.endswith("_scores.parquet"):
            rows += pq.read_table(parquet).to_pylist()
    return rows


def scores_by_uid(directory: Path) -> dict[str, float]:
    out = {}
    for path in directory.glob("*_scores.parquet"):
        out.update(zip(*(pq.read_table(path).column(c).to_pylist() for c in ("uid", "score"))))
    return out


def members(directory: Path) -> dict[str, list[tuple[str, bytes]]]:
    """key -> [(member name, payload), ...] over every tar of a directory, read with tarfile."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    for tar_path in sorted(directory.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar:
                out.setdefault(info.name.split(".", 1)[0], []).append((info.name, tar.extractfile(info).read()))
    return out


def subset(source: Path, out: Path, *args: str) -> int:
    return main(["subset", str(source), "--output", str(out), "--processes", "1", "--quiet", *args])


def check_output(source: Path, out: Path, expected_uids: list[str]) -> dict:
    """The output holds exactly ``expected_uids`` in input order, copied byte for byte; returns subset.json."""
    by_uid = {row["uid"]: row for row in all_rows(source)}
    order = [row["uid"] for row in all_rows(source)]
    expected = sorted(expected_uids, key=order.index)
    assert [row["uid"] for row in all_rows(out)] == expected
    assert [row for row in all_rows(out)] == [by_uid[uid] for uid in expected]  # the source rows, all columns
    source_members, out_members = members(source), members(out)
    assert list(out_members) == expected  # tar order = parquet order = input order
    for uid in expected:
        assert out_members[uid] == source_members[uid]  # same member names, order and bytes
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar:
                assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
    sizes = json.loads((out / "sizes.json").read_text())
    for tar_path in sorted(out.glob("*.tar")):
        stats = json.loads((out / f"{tar_path.stem}_stats.json").read_text())
        count = pq.read_metadata(out / f"{tar_path.stem}.parquet").num_rows
        assert stats["count"] == stats["successes"] == count == sizes[tar_path.name]
        assert stats["bytes"] == tar_path.stat().st_size
    assert sum(sizes.values()) == len(expected)
    summary = json.loads((out / "subset.json").read_text())
    assert summary["kept"] == len(expected)
    uids = np.load(out / "uids.npy")
    assert pairs_to_hex(uids["f0"], uids["f1"]) == sorted(expected)
    if expected:
        assert main(["inspect", "validate", str(out)]) == 0
    return summary


def expected_top(source: Path, fraction: str) -> list[str]:
    scores = scores_by_uid(source)
    k = int(Fraction(fraction) * len(scores))
    return sorted(scores, key=lambda uid: (-scores[uid], uid))[:k]


# ------------------------------------------------------------------------------------------ each filter alone


def test_where_on_metadata_columns(source, tmp_path):
    out = tmp_path / "new"
    assert subset(source, out, "--where", 'language == "en" and width >= 256') == 0
    expected = [r["uid"] for r in all_rows(source) if r["language"] == "en" and r["width"] >= 256]
    assert 0 < len(expected) < 18
    summary = check_output(source, out, expected)
    assert summary["filters"] == [{"filter": "where", "passed": len(expected), "left": len(expected)}]
    assert summary["input"] == {"shards": 3, "samples": 18}


def test_where_missing_values_are_never_kept_unless_asked_for(source, tmp_path):
    rows = all_rows(source)
    assert subset(source, tmp_path / "a", "--where", 'language != "en"') == 0
    check_output(source, tmp_path / "a", [r["uid"] for r in rows if r["language"] not in ("en", None)])
    assert subset(source, tmp_path / "b", "--where", 'language is None or language_score * 2 > 1.5') == 0
    check_output(source, tmp_path / "b", [r["uid"] for r in rows
                                         if r["language"] is None or r["language_score"] * 2 > 1.5])


def test_min_score(source, tmp_path):
    out = tmp_path / "new"
    assert subset(source, out, "--min-score", "0.5") == 0
    scores = scores_by_uid(source)
    summary = check_output(source, out, [uid for uid, s in scores.items() if s >= np.float32(0.5)])
    assert summary["scores"] == {"model": "clip-test", "unscored": 0}
    # The same scores in a directory of their own (--scores DIR), beside shards that have none.
    bare, elsewhere = tmp_path / "bare", tmp_path / "scores"
    shutil.copytree(source, bare, ignore=shutil.ignore_patterns("*_scores.parquet"))
    elsewhere.mkdir()
    for path in source.glob("*_scores.parquet"):
        shutil.copy(path, elsewhere / path.name)
    assert subset(bare, tmp_path / "again", "--min-score", "0.5", "--scores", str(elsewhere)) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "again").glob("0*")} == \
        {p.name: p.read_bytes() for p in out.glob("0*")}


@pytest.mark.parametrize("fraction", ["0.25", "0.5", "1/3", "0.05", "1"])
def test_top_fraction_is_exact_with_ties_broken_by_uid(source, tmp_path, fraction):
    out = tmp_path / "new"
    rc = subset(source, out, "--top-fraction", fraction)
    expected = expected_top(source, fraction)
    assert rc == (0 if expected else 1)
    summary = check_output(source, out, expected)
    assert summary["top_fraction"]["k"] == len(expected) == int(Fraction(fraction) * 18)
    if fraction == "0.25":  # k = 4: the 0.9 and three of the four 0.8s, the smallest uids
        scores = scores_by_uid(source)
        tied = sorted(uid for uid, s in scores.items() if s == np.float32(0.8))
        assert len(tied) == 5 and set(expected) == {max(scores, key=scores.get), *tied[:3]}
        assert summary["top_fraction"]["lowest_score_kept"] == pytest.approx(0.8)


def test_unscored_samples_are_never_kept_and_are_counted(source, tmp_path, capsys):
    """A null score (aligndata score could not read the image or caption) passes no score filter; the top fraction
    is of the scored samples; subset.json and the summary line count the unscored."""
    partly = tmp_path / "src"
    shutil.copytree(source, partly)
    table = pq.read_table(partly / "00001_scores.parquet")
    values = table.column("score").to_pylist()
    unscored = table.column("uid").to_pylist()[:2]
    values[:2] = [None, None]
    pq.write_table(table.set_column(1, "score", pa.array(values, pa.float32())), partly / "00001_scores.parquet")
    scores = {uid: s for uid, s in scores_by_uid(partly).items() if s is not None}
    assert len(scores) == 16 and not set(unscored) & set(scores)
    assert main(["subset", str(partly), "--output", str(tmp_path / "top"), "--processes", "1",
                 "--top-fraction", "0.5"]) == 0
    assert "unscored (null score: aligndata score could not read the image or caption): 2" in capsys.readouterr().out
    expected = sorted(scores, key=lambda uid: (-scores[uid], uid))[:8]  # floor(0.5 * 16), not of 18
    summary = check_output(partly, tmp_path / "top", expected)
    assert summary["scores"] == {"model": "clip-test", "unscored": 2}
    assert (summary["top_fraction"]["k"], summary["top_fraction"]["of"]) == (8, 16)
    assert subset(partly, tmp_path / "all", "--top-fraction", "1") == 0
    check_output(partly, tmp_path / "all", list(scores))
    assert subset(partly, tmp_path / "min", "--min-score", "-1") == 0
    assert check_output(partly, tmp_path / "min", list(scores))["filters"] == [
        {"filter": "min_score", "passed": 16, "left": 16}]


def test_uid_lists_text_and_parquet(source, tmp_path):
    rows = all_rows(source)
    chosen = [rows[i]["uid"] for i in (1, 4, 7, 12)]
    text = tmp_path / "uids.txt"
    text.write_text("# chosen by hand\n" + "\n".join([chosen[0].upper(), "", *chosen[1:]]) + "\n"
                    + "0123456789abcdef0123456789abcdef\n")  # a uid that is not in the set: ignored
    assert subset(source, tmp_path / "a", "--uids", str(text)) == 0
    summary = check_output(source, tmp_path / "a", chosen)
    assert summary["uid_list"]["uids"] == 5
    listing = tmp_path / "uids.parquet"
    pq.write_table(pa.table({"uid": chosen[:2], "note": ["x", "y"]}), listing)
    assert subset(source, tmp_path / "b", "--uids", str(listing)) == 0
    check_output(source, tmp_path / "b", chosen[:2])


def test_drop_duplicates_default_listing_and_named(source, tmp_path):
    rows = all_rows(source)
    dropped = {rows[5]["uid"], rows[9]["uid"], rows[16]["uid"]}
    assert subset(source, tmp_path / "a", "--drop-duplicates") == 0  # SHARDS_DIR/duplicates
    summary = check_output(source, tmp_path / "a", [r["uid"] for r in rows if r["uid"] not in dropped])
    assert summary["duplicates"]["rows"] == 5 and summary["duplicates"]["uids_marked_dropped"] == 3
    assert subset(source, tmp_path / "b", "--drop-duplicates", str(source / "duplicates" / "part-00000.parquet"),
                  "--where", "width > 0") == 0
    check_output(source, tmp_path / "b", [r["uid"] for r in rows if r["uid"] not in dropped])


def test_every_filter_combined_with_and(source, tmp_path):
    rows = all_rows(source)
    scores = scores_by_uid(source)
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text("\n".join(r["uid"] for r in rows[:15]))
    out = tmp_path / "new"
    assert subset(source, out, "--uids", str(uid_file), "--drop-duplicates", "--where", "width >= 256",
                  "--top-fraction", "0.6") == 0
    top = set(expected_top(source, "0.6"))
    dropped = {rows[5]["uid"], rows[9]["uid"], rows[16]["uid"]}
    tests = [("uids", lambda r: r["uid"] in {x["uid"] for x in rows[:15]}),
             ("drop_duplicates", lambda r: r["uid"] not in dropped),
             ("where", lambda r: r["width"] >= 256),
             ("top_fraction", lambda r: r["uid"] in top)]
    expected = [r["uid"] for r in rows if all(test(r) for _, test in tests)]
    summary = check_output(source, out, expected)
    left = rows
    funnel = []
    for name, test in tests:
        left = [r for r in left if test(r)]
        funnel.append({"filter": name, "passed": sum(map(test, rows)), "left": len(left)})
    assert summary["filters"] == funnel
    assert 0 < len(expected) < funnel[0]["left"]
    assert scores  # the ranking used every shard's scores


# ------------------------------------------------------------------------------ repacking and determinism


def test_repacked_in_input_order_and_identical_bytes_for_any_process_count(source, tmp_path):
    runs = {}
    for name, processes in (("one", "1"), ("two", "2"), ("again", "1")):
        out = tmp_path / name
        assert main(["subset", str(source), "--output", str(out), "--samples-per-shard", "4", "--processes",
                     processes, "--quiet", "--min-score", "0.05"]) == 0
        runs[name] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert runs["one"] == runs["two"] == runs["again"]
    expected = [uid for uid, s in scores_by_uid(source).items() if s >= np.float32(0.05)]
    check_output(source, tmp_path / "one", expected)
    sizes = json.loads(runs["one"]["sizes.json"])
    assert list(sizes.values()) == [4] * (len(expected) // 4) + ([len(expected) % 4] if len(expected) % 4 else [])


def test_no_filter_reshards_everything(source, tmp_path):
    assert subset(source, tmp_path / "new", "--samples-per-shard", "7") == 0
    check_output(source, tmp_path / "new", [r["uid"] for r in all_rows(source)])
    assert json.loads((tmp_path / "new" / "sizes.json").read_text()) == {"00000.tar": 7, "00001.tar": 7,
                                                                         "00002.tar": 4}


def test_parquet_order_is_input_order_even_when_the_tar_differs(source, tmp_path):
    reordered = tmp_path / "src"
    shutil.copytree(source, reordered)
    table = pq.read_table(reordered / "00000.parquet")
    pq.write_table(table.take(list(range(table.num_rows))[::-1]), reordered / "00000.parquet")
    assert subset(reordered, tmp_path / "new", "--samples-per-shard", "5") == 0
    check_output(reordered, tmp_path / "new", [r["uid"] for r in all_rows(reordered)])


def test_webdataset_reads_the_subset(source, tmp_path):
    pytest.importorskip("webdataset")
    out = tmp_path / "new"
    assert subset(source, out, "--where", "height > 300", "--samples-per-shard", "3") == 0
    samples = list(iter_samples(out))  # webdataset.WebDataset over the tars in order
    rows = all_rows(out)
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows] and rows
    for sample, row in zip(samples, rows):
        assert sample["txt"].decode() == row["caption"] and json.loads(sample["json"])["uid"] == row["uid"]


# ------------------------------------------------------------------------------------ DataComp's format


def resharder_keeps(subset_path: Path, json_member: bytes) -> int:
    """How many copies DataComp's resharder writes of a sample, re-done from mlfoundations/datacomp resharder.py
    (``load_subset``: np.load with mmap and a check that the dtype is u8,u8; ``copy_worker``: the .json's uid as
    divmod(int(uid, 16), 2**64), then searchsorted left/right and one copy per match)."""
    subset_array = np.load(subset_path, mmap_mode="r")
    assert subset_array.dtype == np.dtype("u8,u8")
    uid = json.loads(json_member)["uid"]
    key = np.array([divmod(int(uid, 16), 2**64)], np.dtype("u8,u8"))[0]
    return int(np.searchsorted(subset_array, key, "right") - np.searchsorted(subset_array, key, "left"))


def test_uids_npy_selects_exactly_the_kept_samples_the_resharder_way(source, tmp_path):
    out = tmp_path / "new"
    assert subset(source, out, "--top-fraction", "0.5", "--where", 'language == "en" or width > 400') == 0
    kept = {r["uid"] for r in all_rows(out)}
    assert kept
    copies = {key: resharder_keeps(out / "uids.npy", dict(files)[f"{key}.json"])
              for key, files in members(source).items()}
    assert {key for key, n in copies.items() if n} == kept
    assert set(copies.values()) == {0, 1}  # each kept uid once: the resharder would write it once


def test_a_subset_file_written_the_datacomp_way_is_read_by_uids(source, tmp_path):
    rows = all_rows(source)
    chosen = [rows[i]["uid"] for i in (0, 3, 8, 17)]
    # As DataComp's README says to write one: pairs of the first and last 16 hex digits, sorted, np.save.
    pairs = np.array([(int(uid[:16], 16), int(uid[16:32], 16)) for uid in chosen], np.dtype("u8,u8"))
    pairs.sort()
    np.save(tmp_path / "subset.npy", pairs)
    assert subset(source, tmp_path / "a", "--uids", str(tmp_path / "subset.npy")) == 0
    check_output(source, tmp_path / "a", chosen)
    # The resharder also takes a raw memmap of the same records (no .npy header).
    pairs.tofile(tmp_path / "subset.bin")
    assert subset(source, tmp_path / "b", "--uids", str(tmp_path / "subset.bin")) == 0
    check_output(source, tmp_path / "b", chosen)
    # Our own uids.npy, fed back, selects the same samples again.
    assert subset(source, tmp_path / "c", "--uids", str(tmp_path / "a" / "uids.npy")) == 0
    assert (tmp_path / "c" / "00000.tar").read_bytes() == (tmp_path / "a" / "00000.tar").read_bytes()


def test_uid_conversions_agree_with_python_ints(tmp_path):
    rng = np.random.default_rng(7)
    uids = [f"{int(x):032x}" for x in rng.integers(0, 2**63, 200)] + ["f" * 32, "0" * 32, "8" + "0" * 31]
    hi, lo = hex_to_pairs(uids, "test")
    assert [(int(h), int(l)) for h, l in zip(hi, lo)] == [divmod(int(u, 16), 2**64) for u in uids]
    assert pairs_to_hex(hi, lo) == uids
    chunked = hex_to_pairs(pa.chunked_array([pa.array(uids[:50]), pa.array(uids).slice(60)]), "t")
    assert pairs_to_hex(*chunked) == uids[:50] + uids[60:]  # chunks and sliced arrays read alike
    assert pairs_to_hex(*hex_to_pairs(pa.array(uids, pa.large_string()).slice(7), "t")) == uids[7:]
    records = np.load(io.BytesIO(npy_bytes(hi, lo)))
    assert records.dtype == np.dtype("u8,u8") and (np.sort(records) == records).all()
    assert len(records) == len(set(uids))
    # Uids sharing their first 16 digits are told apart by the last 16.
    shared = ["a" * 16 + f"{i:016x}" for i in (3, 1, 2)]
    members_set = UidSet(*hex_to_pairs(shared[:2], "test"))
    assert members_set.contains(*hex_to_pairs(shared, "test")).tolist() == [True, True, False]
    (tmp_path / "bad.txt").write_text("\n".join(uids[:3] + ["not-a-uid"]))
    with pytest.raises(SubsetError, match="line 4"):
        read_uid_list(str(tmp_path / "bad.txt"))
    np.save(tmp_path / "wrong.npy", np.zeros((3, 2), np.uint64))
    with pytest.raises(SubsetError, match="dtype u8,u8"):
        read_uid_list(str(tmp_path / "wrong.npy"))


# ------------------------------------------------------------------------------------- the top fraction


def test_radix_select_matches_a_full_sort():
    rng = np.random.default_rng(3)
    cases = [rng.normal(size=500).astype(np.float32),                         # distinct scores
             rng.integers(0, 4, 500).astype(np.float32),                       # a few heavy ties
             np.zeros(300, np.float32),                                        # every score the same
             np.array([np.inf, -np.inf, 0.0, -0.0, 1e-38, -1e-38, 3.0, np.float32(3.0)] * 20, np.float32)]
    for scores in cases:
        n = len(scores)
        hi = rng.integers(0, 2**63, n, dtype=np.uint64)
        lo = rng.integers(0, 2**63, n, dtype=np.uint64)
        hi[: n // 4] = hi[0]  # some uids share their first half
        rows = scoring.digits(scoring.rank_keys(scores), hi, lo)
        shards = np.array_split(np.arange(n), 5)
        order = sorted(range(n), key=lambda i: (-float(scores[i]), int(hi[i]), int(lo[i])))
        for k in (1, 2, n // 3, n // 2, n - 1):
            passes = []

            def count_next(prefix):
                passes.append(prefix)
                return sum(scoring.histogram(rows[part], prefix) for part in shards)

            cutoff = scoring.cutoff_parts(scoring.radix_select(k, count_next))
            kept = scoring.within(scoring.rank_keys(scores), hi, lo, cutoff)
            assert set(np.nonzero(kept)[0]) == set(order[:k])
            assert len(passes) <= scoring.DIGITS


def test_rank_keys_sort_like_descending_scores():
    scores = np.array([np.inf, 2.5, 1.0, 1e-30, 0.0, -0.0, -1e-30, -1.0, -np.inf], np.float32)
    keys = scoring.rank_keys(scores)
    assert keys[4] == keys[5]  # -0.0 ties with 0.0
    assert (np.diff(keys.astype(np.int64))[[0, 1, 2, 3, 5, 6, 7]] > 0).all()
    assert [scoring.score_at(int(k)) for k in keys] == [float(s) for s in scores]  # and back (0.0 == -0.0)


def test_top_fraction_count_is_exact():
    assert scoring.top_count(Fraction("0.29"), 100) == 29  # 0.29 * 100 in floats is 28.999999999999996
    assert scoring.top_count(Fraction("1/3"), 18) == 6


# ------------------------------------------------------------------------------------------------- errors


def run_error(capsys, *argv: str) -> str:
    """Run a command that must fail with exit 2 and one line on stderr (after any progress line of a pass that
    completed); return that line."""
    capsys.readouterr()  # what earlier commands printed
    assert main([*argv, "--processes", "1"]) == 2  # one process: a pool's start costs seconds on 2 cores
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("aligndata subset: error: ") and "Traceback" not in "".join(lines), lines
    assert all(line.startswith("subset: ") for line in lines[:-1]), lines  # progress lines only
    return lines[-1]


@pytest.mark.parametrize("expr, message", [
    ("lang == 'en'", "unknown column 'lang' in shard 00000"),
    ("score > 0.5", "--min-score / --top-fraction"),
    ("len(caption) > 3", "not allowed: function calls"),
    ("caption.upper() == 'A'", "not allowed: function calls"),
    ("url.__class__ == 1", "not allowed: attribute access"),
    ("caption[0] == 'a'", "not allowed: indexing"),
    ("__import__('os').system('true')", "not allowed: function calls"),
    ("[c for c in caption]", "not allowed: comprehensions"),
    ("width > 1 & height > 1", "not allowed: & (write and)"),
    ("width > ", "invalid syntax"),
    ("width", "not a condition"),
    ("width == 'wide'", "the types do not match"),
    ("language in language", "needs a literal list"),
])
def test_where_errors_are_one_line(source, tmp_path, capsys, expr, message):
    out = tmp_path / "new"
    err = run_error(capsys, "subset", str(source), "--output", str(out), "--where", expr)
    assert message in err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_where_parses_but_never_evaluates_python():
    where = compile_where('language in ["en", "de"] and not width < 10 or height / 3 >= 100.5')
    assert where.columns == ("language", "width", "height")
    table = pa.table({"language": ["en", None, "de", "fr"], "width": [5, 20, 30, 40],
                      "height": [1, 400, 2, 3]})
    assert where.mask(table, "t").tolist() == [False, True, True, False]


def test_score_errors_name_the_shard(source, tmp_path, capsys):
    broken = tmp_path / "src"
    shutil.copytree(source, broken)
    (broken / "00001_scores.parquet").unlink()
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "a"), "--min-score", "0")
    assert "shard 00001: no scores file" in err
    table = pq.read_table(source / "00001_scores.parquet")
    pq.write_table(table.slice(1), broken / "00001_scores.parquet")
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "a"), "--top-fraction", "0.5")
    assert f"shard 00001: 1 of {table.num_rows} samples have no score" in err
    models = table.column("model").to_pylist()
    models[0] = "another-model"
    pq.write_table(table.set_column(2, "model", pa.array(models)), broken / "00001_scores.parquet")
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "a"), "--min-score", "0")
    assert "2 models (another-model, clip-test)" in err
    scores = table.column("score").to_pylist()
    scores[0] = float("nan")
    pq.write_table(table.set_column(1, "score", pa.array(scores, pa.float32())), broken / "00001_scores.parquet")
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "a"), "--min-score", "0")
    assert "shard 00001: 1 samples" in err and "NaN score" in err
    assert not (tmp_path / "a").exists()


def test_shards_that_disagree_with_their_parquet_are_errors(source, tmp_path, capsys):
    broken = tmp_path / "src"
    shutil.copytree(source, broken)
    stats = json.loads((broken / "00002_stats.json").read_text())
    (broken / "00002_stats.json").write_text(json.dumps({**stats, "successes": stats["successes"] + 1}))
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "a"))
    assert "shard 00002: its parquet has" in err and "_stats.json counts" in err
    shutil.copy(source / "00002_stats.json", broken / "00002_stats.json")
    table = pq.read_table(broken / "00001.parquet")
    keys = table.column("key").to_pylist()
    keys[-1] = "f" * 32  # a row whose sample is not in the tar
    pq.write_table(table.set_column(0, "key", pa.array(keys)), broken / "00001.parquet")
    err = run_error(capsys, "subset", str(broken), "--output", str(tmp_path / "b"))
    assert f"shard 00001: sample {'f' * 32} is in its parquet but not in its tar" in err
    assert not (tmp_path / "b" / "subset.json").exists()  # the run did not complete


def test_output_directory_rules(source, tmp_path, capsys):
    out = tmp_path / "new"
    assert subset(source, out, "--samples-per-shard", "5") == 0
    (out / "notes.txt").write_text("mine")
    err = run_error(capsys, "subset", str(source), "--output", str(out), "--where", "width > 400")
    assert "not empty" in err and "--overwrite" in err
    assert subset(source, out, "--where", "width > 400", "--overwrite") == 0
    expected = [r["uid"] for r in all_rows(source) if r["width"] > 400]
    check_output(source, out, expected)
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not (out / "00003.tar").exists()  # the earlier run's later shards are gone
    err = run_error(capsys, "subset", str(source), "--output", str(source), "--overwrite")
    assert "holds the source shards" in err


def test_bad_inputs_are_one_line(source, tmp_path, capsys):
    out = str(tmp_path / "new")
    assert "no such file" in run_error(capsys, "subset", str(source), "--output", out, "--uids",
                                       str(tmp_path / "missing.npy"))
    assert "no such file or directory" in run_error(capsys, "subset", str(source), "--output", out,
                                                    "--drop-duplicates", str(tmp_path / "nowhere"))
    assert "no such file or directory" in run_error(capsys, "subset", str(tmp_path / "none"), "--output", out)
    with pytest.raises(SystemExit) as exited:  # argparse: usage errors exit 2
        main(["subset", str(source), "--output", out, "--top-fraction", "1.5"])
    assert exited.value.code == 2
    assert "must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["subset", str(source), "--output", out, "--top-fraction", "0.5", "--min-score", "1"])


def test_nothing_kept_exits_1_with_the_counts(source, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["subset", str(source), "--output", str(out), "--where", "width < 0", "--processes", "1"]) == 1
    assert "no sample passed every filter" in capsys.readouterr().err
    summary = json.loads((out / "subset.json").read_text())
    assert summary["kept"] == 0 and summary["filters"] == [{"filter": "where", "passed": 0, "left": 0}]
    assert not list(out.glob("*.tar")) and len(np.load(out / "uids.npy")) == 0

"""``aligndata dedup``: duplicates inside a shard set, as a Beam job (aligndata/pipeline/dedup_job.py), checked
against a plain-Python all-pairs reference (tests/dedup_reference.py) on shards written by the real writer from
real images run through the real per-image chain."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dedup_reference import jpeg, reference_groups, sample, shard_rows, uid_of, write_corpus
from helpers import COCO, encode, needs_coco
from PIL import Image, ImageEnhance

from aligndata.cli import main
from aligndata.filters import corpus_dedup as cd
from aligndata.pipeline import components
from aligndata.shards.duplicates import check_groups, read_duplicates
from aligndata.pipeline.dedup_run import prepare_output
from aligndata.shards.writer import OutputDirNotEmpty, Sample, write_shard

pytestmark = pytest.mark.e2e  # most tests run the whole Beam job
T = cd.DEFAULT_CORPUS_HAMMING


def photo(seed: int, size=(640, 480)) -> Image.Image:
    """A photo-like image (smooth random colours): distinct seeds give unrelated pHashes."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


def crop_border(image: Image.Image, fraction: float = 0.05) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


def half(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)


def rows_of(out: Path) -> set[tuple]:
    return {(r["uid"], r["group"], r["keep"], r["kind"]) for r in read_duplicates(str(out)).to_pylist()}


def group_of(out: Path) -> dict[str, int]:
    return {r["uid"]: r["group"] for r in read_duplicates(str(out)).to_pylist()}


def part_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("part-*.parquet"))}


def summary_of(out: Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


# --------------------------------------------------------------------------------------- the main corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 unrelated photos; exact copies (same bytes) of 0-5; half-size copies of 6-9, JPEG q30 copies of 10-13,
    5% border crops of 14-17, brightness +10% of 18-19; photo 20 with an exact copy and a q30 copy (one group,
    two kinds of link); and 40 blank images of different sizes (distinct bytes, one pHash: a hot hash) whose
    captions vote 20 / 15 / 5 for the keep rule, in mixed case."""
    directory = tmp_path_factory.mktemp("dedup") / "shards"
    samples, roles = [], {}

    def add(data, caption, url, role):
        s = sample(data, caption, url)
        samples.append(s)
        roles[s.key] = role

    for i in range(24):
        image = photo(i)
        original = jpeg(image)
        add(original, f"a photo of thing {i}", f"http://origin.test/{i}.jpg", ("original", i))
        if i < 6 or i == 20:
            add(original, f"the same photo {i} again", f"http://mirror.test/{i}.jpg", ("exact", i))
        copy = {6: half, 7: half, 8: half, 9: half, 14: crop_border, 15: crop_border, 16: crop_border,
                17: crop_border, 18: lambda im: ImageEnhance.Brightness(im).enhance(1.1),
                19: lambda im: ImageEnhance.Brightness(im).enhance(1.1)}.get(i)
        if copy is not None:
            add(jpeg(copy(image)), f"a photo of thing {i}", f"http://copies.test/{i}.jpg", ("near", i))
        if 10 <= i < 14 or i == 20:
            add(jpeg(image, 30), f"a compressed photo of thing {i}", f"http://copies.test/q30/{i}.jpg", ("near", i))
    captions = ["Blank image"] * 10 + ["blank IMAGE"] * 10 + ["white square"] * 15 + [f"unique {k}" for k in range(5)]
    random.Random(0).shuffle(captions)
    for k, caption in enumerate(captions):
        add(jpeg(Image.new("RGB", (300 + k, 260), "white")), caption, f"http://blank.test/{k}.jpg", ("blank", k))
    shards = write_corpus(directory, samples, shards=4)
    return Path(shards), roles, shard_rows(directory)


@pytest.fixture(scope="module")
def fnapi(corpus, tmp_path_factory):
    shards, _, _ = corpus
    out = tmp_path_factory.mktemp("dedup_out") / "fnapi"
    assert main(["dedup", str(shards), "--output", str(out), "--quiet"]) == 0
    return out


def test_the_corpus_holds_what_the_tests_need(corpus):
    _, roles, rows = corpus
    phash = {r["uid"]: int(r["phash"], 16) for r in rows}
    originals = {i: uid for uid, (role, i) in roles.items() if role == "original"}
    distances = {uid: (phash[uid] ^ phash[originals[i]]).bit_count() for uid, (role, i) in roles.items()
                 if role == "near"}
    assert sum(d <= T for d in distances.values()) >= 8 and max(distances.values()) > T  # both sides of T
    unrelated = [(phash[a] ^ phash[b]).bit_count() for a in originals.values() for b in originals.values() if a < b]
    assert min(unrelated) > T
    assert len({phash[uid] for uid, (role, _) in roles.items() if role == "blank"}) == 1  # one hot pHash


def test_groups_equal_the_all_pairs_reference(corpus, fnapi):
    _, _, rows = corpus
    assert rows_of(fnapi) == reference_groups(rows, T)
    assert check_groups(read_duplicates(str(fnapi))) == []  # >= 2 members, exactly one keep, one kind


def test_every_exact_copy_and_every_near_copy_within_t_is_grouped_and_distinct_photos_are_not(corpus, fnapi):
    _, roles, rows = corpus
    groups = group_of(fnapi)
    phash = {r["uid"]: int(r["phash"], 16) for r in rows}
    originals = {i: uid for uid, (role, i) in roles.items() if role == "original"}
    for uid, (role, i) in roles.items():
        if role == "exact":
            assert groups[uid] == groups[originals[i]]
        elif role == "near":
            within = (phash[uid] ^ phash[originals[i]]).bit_count() <= T
            assert (groups.get(uid) == groups.get(originals[i]) is not None) == within, (uid, i)
    grouped_originals = [groups[uid] for uid in originals.values() if uid in groups]
    assert len(grouped_originals) == len(set(grouped_originals))  # no two distinct photos share a group


def test_kinds_and_the_keep_rule(corpus, fnapi):
    _, roles, rows = corpus
    table = read_duplicates(str(fnapi)).to_pylist()
    by_uid = {r["uid"]: r for r in table}
    originals = {i: uid for uid, (role, i) in roles.items() if role == "original"}
    assert all(by_uid[originals[i]]["kind"] == "exact" for i in range(6))
    assert by_uid[originals[20]]["kind"] == "near"  # an exact copy and a q30 copy: not all the same bytes
    blank = [uid for uid, (role, _) in roles.items() if role == "blank"]
    assert len({by_uid[uid]["group"] for uid in blank}) == 1 and all(by_uid[u]["kind"] == "near" for u in blank)
    caption = {r["uid"]: r["caption"] for r in rows}
    most = [uid for uid in blank if caption[uid].lower() == "blank image"]  # 20 votes, case folded
    assert [uid for uid in blank if by_uid[uid]["keep"]] == [min(most)]
    # a group's id is its first member's position: shard index << 32 | row
    position = {r["uid"]: r["position"] for r in rows}
    assert by_uid[blank[0]]["group"] == min(position[uid] for uid in blank)


def test_summary_counts_what_was_written(corpus, fnapi):
    _, _, rows = corpus
    summary = summary_of(fnapi)
    table = read_duplicates(str(fnapi)).to_pylist()
    assert summary["rows"] == len(rows) and summary["shards"] == 4
    assert summary["samples_in_groups"] == summary["rows_written"] == len(table)
    assert summary["groups"] == sum(r["keep"] for r in table)
    assert summary["dropped"] == len(table) - summary["groups"]
    for kind in ("exact", "near"):
        assert summary["by_kind"][kind]["samples"] == sum(r["kind"] == kind for r in table)
    assert summary["T"] == T and summary["near"]["buckets_over_cap"] == 0
    assert summary["near"]["propagation"]["converged"] and summary["seconds"] > 0
    assert [p.name for p in fnapi.glob("part-*")] == ["part-00000-of-00001.parquet"]


def test_multi_processing_writes_the_same_bytes(corpus, fnapi, tmp_path):
    shards, _, _ = corpus
    out = tmp_path / "multi"
    assert main(["dedup", str(shards), "--output", str(out), "--quiet", "--direct_running_mode",
                 "multi_processing", "--direct_num_workers", "2"]) == 0
    assert part_bytes(out) == part_bytes(fnapi)
    drop = {"seconds", "runner", "direct_running_mode", "output"}
    assert {k: v for k, v in summary_of(out).items() if k not in drop} == \
        {k: v for k, v in summary_of(fnapi).items() if k not in drop}


def test_exact_only_writes_beside_the_shards_by_default_and_never_overwrites_silently(corpus, tmp_path, capsys):
    shards, _, rows = corpus
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in shards.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert main(["dedup", str(copy), "--exact-only"]) == 0
    out = copy / "duplicates"
    assert rows_of(out) == reference_groups(rows, T, exact_only=True)
    summary = summary_of(out)
    assert summary["by_kind"]["near"]["groups"] == 0 and summary["by_kind"]["exact"]["groups"] == 7
    assert summary["T"] is None and "near" not in summary
    err = capsys.readouterr().err
    assert "7 duplicate groups (7 exact, 0 near)" in err and "Traceback" not in err
    assert main(["dedup", str(copy), "--exact-only", "--quiet"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")  # --overwrite removes only what dedup wrote, and says so
    with pytest.raises(OutputDirNotEmpty, match="notes.txt"):
        prepare_output(str(out), overwrite=True)
    (out / "notes.txt").unlink()
    prepare_output(str(out), overwrite=True)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------- hot keys and the caps


def planted_shard(directory: Path, phashes: list[int], captions: list[str]) -> str:
    """A shard whose samples carry the given pHashes (planted in the metadata: dedup reads only the parquet, and
    a band value shared by many distinct pHashes is hard to make from images on demand). Each sample has its
    own real PNG (lossless: distinct colours give distinct bytes), so its sha256 is its own."""
    samples = []
    for k, (value, caption) in enumerate(zip(phashes, captions)):
        data = encode(Image.new("RGB", (8, 8), (k % 256, k // 256 % 256, 7)), "PNG")
        url = f"http://planted.test/{k}.jpg"
        uid = uid_of(url, caption)
        meta = {"key": uid, "uid": uid, "url": url, "caption": caption, "sha256": hashlib.sha256(data).hexdigest(), "phash": f"{value:016x}"}
        samples.append(Sample(uid, data, "png", caption, meta))
    write_shard(str(directory), 0, samples)
    return str(directory)


def test_a_hot_band_is_capped_and_reported_and_its_pairs_are_found_in_other_bands(tmp_path):
    rng = random.Random(7)
    top = rng.getrandbits(13) << 51  # band 0 of T = 4 is the top 13 bits: 65 distinct pHashes share it
    crowd = [top | rng.getrandbits(51) for _ in range(60)]
    near = [value ^ (1 << rng.randrange(51)) ^ (1 << rng.randrange(51)) for value in crowd[:5]]  # d <= 2
    hot = [rng.getrandbits(64)] * 500  # one pHash on 500 samples (a placeholder image)
    phashes = crowd + near + hot
    captions = [f"sample {k}" for k in range(65)] + ["placeholder"] * 300 + ["Placeholder!"] * 200
    shards = planted_shard(tmp_path / "shards", phashes, captions)
    out = tmp_path / "out"
    assert main(["dedup", shards, "--output", str(out), "--max-band-size", "20", "--max-rounds", "4", "--quiet"]) == 0
    summary = summary_of(out)
    assert summary["near"]["buckets_over_cap"] == 1 and summary["near"]["largest_bucket"] == 65
    assert summary["near"]["members_left_out"] == 45
    assert rows_of(out) == reference_groups(shard_rows(tmp_path / "shards"), T)  # nothing lost to the cap
    groups = read_duplicates(str(out)).to_pylist()
    placeholder = [r for r in groups if r["uid"] in {uid_of(f"http://planted.test/{k}.jpg", captions[k])
                                                     for k in range(65, 565)}]
    assert len(placeholder) == 500 and sum(r["keep"] for r in placeholder) == 1


def test_propagation_reports_a_chain_longer_than_its_rounds():
    """A path 0-1-...-11 whose smallest label sits at one end: 11 rounds are needed. After r rounds vertex k holds
    the smallest label within r hops; 3 rounds leave labels changing (reported), 12 converge."""
    n = 12
    neighbours = {k: tuple(j for j in (k - 1, k + 1) if 0 <= j < n) for k in range(n)}

    def run(rounds):
        def last_round(changes):
            counts = components.changes_list(changes[0], rounds)
            assert (counts[-1] > 0) == (rounds < n - 1), counts

        with beam.Pipeline(runner="FnApiRunner") as p:
            states = p | beam.Create([(k, components.state(n - 1 - k, neighbours[k])) for k in range(n)])
            final, changes = components.propagate(states, rounds)
            labels = final | beam.Map(lambda kv: (kv[0], kv[1][components.LABEL]))
            assert_that(labels, equal_to([(k, max(0, n - 1 - k - rounds)) for k in range(n)]), label="Labels")
            assert_that(changes, last_round, label="LastRound")

    run(3)
    run(12)


# ----------------------------------------------------------------------------------------------- errors


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["dedup", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aligndata dedup: error:") and "nothing-here" in err[0]
    # shards from another tool: no sha256/phash in the parquet
    other = tmp_path / "other"
    other.mkdir()
    (other / "00000.tar").write_bytes(b"\0" * 1024)
    pq.write_table(pa.table({"key": ["a"], "caption": ["x"]}), other / "00000.parquet")
    assert main(["dedup", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no uid, sha256, phash column(s)" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(other), "--hamming", "17"])
    assert exit_info.value.code == 2 and "must be within 0..16" in capsys.readouterr().err


def test_a_bad_phash_names_its_shard_and_row(tmp_path, capsys):
    shards = tmp_path / "bad"
    shards.mkdir()
    (shards / "00000.tar").write_bytes(b"\0" * 1024)
    pq.write_table(pa.table({"uid": ["a", "b"], "sha256": ["0" * 64, "1" * 64], "phash": ["00ff", "not-hex!"],
                             "caption": ["x", "y"]}), shards / "00000.parquet")
    assert main(["dedup", str(shards), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "00000.parquet: row 1 (uid 'b')" in err[0], err


# --------------------------------------------------------------------------------------------- real photos


@needs_coco
def test_real_photos_exact_and_transformed_copies(tmp_path):
    """24 COCO photos, each with an exact copy, a half-size copy, a JPEG q30 copy and a 5% border crop, as
    docs/dedup.md's accuracy method makes them."""
    photos = sorted(COCO.glob("*.jpg"))[:24]
    samples, origin = [], {}
    for n, path in enumerate(photos):
        data = path.read_bytes()
        image = Image.open(path).convert("RGB")
        copies = {"original": data, "exact": data, "half": jpeg(half(image), 95), "q30": jpeg(image, 30),
                  "crop": jpeg(crop_border(image), 95)}
        for role, payload in copies.items():
            try:
                s = sample(payload, f"{role} of photo {n}", f"http://coco.test/{role}/{path.name}")
            except ValueError:  # a half-size copy under the 200 px rule is not in the corpus
                continue
            samples.append(s)
            origin[s.key] = (role, n)
    write_corpus(tmp_path / "shards", samples, shards=3)
    out = tmp_path / "out"
    assert main(["dedup", str(tmp_path / "shards"), "--output", str(out), "--quiet", "--max-rounds", "4"]) == 0
    rows = shard_rows(tmp_path / "shards")
    assert rows_of(out) == reference_groups(rows, T)
    groups = group_of(out)
    originals = {n: uid for uid, (role, n) in origin.items() if role == "original"}
    assert all(groups[uid] == groups[originals[n]] for uid, (role, n) in origin.items() if role == "exact")
    q30 = [groups.get(uid) == groups[originals[n]] for uid, (role, n) in origin.items() if role == "q30"]
    assert sum(q30) >= 0.95 * len(q30)  # docs/dedup.md: JPEG q30 recall 1.000 at T = 4
    firsts = [groups[uid] for uid in originals.values()]
    assert len(firsts) == len(set(firsts)) == len(photos)  # distinct real photos are never grouped

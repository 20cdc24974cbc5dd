"""--dry-run: the text and frequency rules through Beam, at their boundaries and on real alt-texts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import REAL, needs_real, write_pairs

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main
from aligndata.io.inputs import InputSpec
from aligndata.pipeline.reference import plain_text_stage  # the plain-Python oracle (the bench's reference loop)
from aligndata.pipeline.sources import iter_rows


def dry_run(inputs: list[str], out: Path, *extra: str) -> tuple[dict, dict]:
    """Run curate --dry-run; return (report, {(file name, row): reason or None})."""
    assert main(["curate", "--input", *inputs, "--output", str(out), "--dry-run", *extra]) == 0
    report = json.loads((out / "report.json").read_text())
    verdicts = {}
    for r in read_ledger(out, "rejected").to_pylist():
        key = (Path(r["source_file"]).name, r["source_row"])
        assert key not in verdicts, f"row {key} has two ledger entries"
        verdicts[key] = r["reason"]
    for r in read_ledger(out, "candidates").to_pylist():
        key = (Path(r["source_file"]).name, r["source_row"])
        assert key not in verdicts, f"row {key} both kept and rejected"
        verdicts[key] = None
    assert len(verdicts) == report["input_rows"] == report["kept"] + report["rejected"]
    return report, verdicts


@pytest.mark.e2e
def test_boundaries_of_every_text_and_frequency_rule(tmp_path):
    rows, expected = [], []

    def add(url, caption, reason):
        rows.append((url, caption))
        expected.append(reason)

    add("http://a.test/w2.jpg", "two words", "text_too_short")
    add("http://a.test/w3.jpg", "exactly three words", None)
    add("http://a.test/w20.jpg", " ".join(f"w{i}" for i in range(20)), None)
    add("http://a.test/w21.jpg", " ".join(f"w{i}" for i in range(21)), "text_too_long")
    for i in range(10):  # shared by exactly 10 images: kept (the rule is "more than 10")
        add(f"http://a.test/ten/{i}.jpg", "a caption on ten images", None)
    add("http://a.test/ten/0.jpg", "a caption on ten images", "duplicate_pair")  # repeats add no image
    for i in range(11):  # 11 images, case variants count as the same text
        add(f"http://a.test/eleven/{i}.jpg", "A caption on Eleven images" if i % 2 else "a caption on eleven images",
            "text_shared_by_too_many_images")
    for i in range(1000):  # an image with exactly 1000 distinct texts: kept
        add("http://a.test/thousand.jpg", f"caption number {i} for one image", None)
    for i in range(1001):
        add("http://a.test/thousand-and-one.jpg", f"caption number {i} for another image", "image_too_many_texts")
    add("http://a.test/thousand.jpg", "caption number 0 for one image", "duplicate_pair")
    # invalid rows: broken encodings, absurd fields, unsupported or malformed URLs
    add("http://a.test/enc.jpg", "a caf\ufffd with a broken byte", "invalid_row")
    add("http://a.test/mojibake.jpg", "donâ€™t panic it is mojibake", "invalid_row")
    add("http://a.test/huge.jpg", "word " * 1000, "invalid_row")
    add("http://a.test/" + "x" * 2100 + ".jpg", "a url far too long to be real", "invalid_row")
    add("javascript:alert(1)", "a script instead of an image", "invalid_row")
    add("http://a.test/a\r\nb.jpg", "a header injection attempt here", "invalid_row")
    add("", "an empty url string here", "invalid_row")
    path = write_pairs(tmp_path / "pairs.parquet", rows)
    report, verdicts = dry_run([path], tmp_path / "out")
    assert [verdicts[("pairs.parquet", i)] for i in range(len(rows))] == expected
    assert report["candidates"] == expected.count(None)
    details = {r["caption"][:20]: r["detail"] for r in read_ledger(tmp_path / "out", "rejected").to_pylist()
               if r["reason"] == "invalid_row"}
    assert details["a caf\ufffd with a broken"] == "broken_encoding:caption"
    assert details["a script instead of "].startswith("unsupported_scheme")
    assert details["word word word word "].startswith("caption_too_long")


@pytest.mark.e2e
def test_allowlist_ties_are_excluded(tmp_path):
    # counts: 5 n-grams seen 3x (alpha...), 5 seen 2x (delta...), 5 seen 1x (eta...).
    rows = [(f"http://a.test/a{i}.jpg", "alpha beta gamma") for i in range(3)]
    rows += [(f"http://a.test/d{i}.jpg", "delta epsilon zeta") for i in range(2)]
    rows += [("http://a.test/e.jpg", "eta theta iota")]
    path = write_pairs(tmp_path / "pairs.parquet", rows)
    # K = 7: the five 3x n-grams fit; the five 2x ones would make 10 > 7, so the whole tie is excluded.
    report, verdicts = dry_run([path], tmp_path / "out", "--vocab-size", "7")
    assert report["frequency"] == {"vocab_size": 7, "distinct_ngrams": 15, "allowlist_threshold": 3,
                                   "allowlist_size": 5}
    assert [verdicts[("pairs.parquet", i)] for i in range(6)] == [None] * 3 + ["text_rare_token"] * 3
    details = {r["caption"]: r["detail"] for r in read_ledger(tmp_path / "out", "rejected").to_pylist()}
    assert "seen 1x < 3" in details["eta theta iota"] and "seen 2x < 3" in details["delta epsilon zeta"]


def _reference(spec: InputSpec, **limits) -> dict:
    verdicts, _ = plain_text_stage(iter_rows(spec), **limits)
    name = Path(spec.path).name
    return {(name, row): reason for (_, row), reason in verdicts.items()}


@pytest.mark.e2e
@needs_real
def test_real_laion_matches_the_plain_python_reference(tmp_path, monkeypatch):
    """The rare-token rule active on real text, by its three lookups: the allowlist as a Python set (small), as a
    sorted array (large), and the join (over --allowlist-memory-mb): the same verdicts as the reference, and
    byte-identical ledgers with the same details ("'gram' seen Nx < c*")."""
    from aligndata.pipeline import curate

    src = REAL / "captions" / "laion_alt_10k.parquet"
    spec = InputSpec(path=str(src), index=0, fmt="parquet", url_col="URL", caption_col="TEXT")
    expected = _reference(spec, vocab_size=20000)
    ledgers = []
    for mode, extra in (("set", ()), ("array", ()), ("join", ("--allowlist-memory-mb", "0"))):
        monkeypatch.setattr(curate, "SET_LOOKUP_MAX", 0 if mode == "array" else 2_000_000)
        out = tmp_path / mode
        report, verdicts = dry_run([str(src)], out, "--url-col", "URL", "--caption-col", "TEXT",
                                   "--vocab-size", "20000", *extra)
        assert verdicts == expected, mode
        assert report["input_rows"] == 10_000
        assert report["rejected_by_reason"]["text_rare_token"] > 1000
        assert report["frequency"]["allowlist_size"] <= 20000
        ledgers.append([p.read_bytes() for p in sorted((out / "rejected").iterdir())])
    assert ledgers[0] == ledgers[1] == ledgers[2]
    details = [r["detail"] for r in read_ledger(tmp_path / "set", "rejected").to_pylist()
               if r["reason"] == "text_rare_token"]
    assert details and all(re.fullmatch(r"""(['"]).+\1 seen \d+x < \d+""", d) for d in details)


@pytest.mark.e2e
@needs_real
def test_real_cc3m_headerless_tsv_matches_the_reference(tmp_path):
    src = REAL / "captions" / "cc3m_validation.tsv"
    report, verdicts = dry_run([str(src)], tmp_path / "out", "--no-header", "--caption-col", "0", "--url-col", "1")
    spec = InputSpec(path=str(src), index=0, fmt="tsv", url_col="1", caption_col="0", header=False)
    assert verdicts == _reference(spec)
    assert report["input_rows"] == 15_833


def test_unknown_column_is_a_clear_error(tmp_path, capsys):
    path = write_pairs(tmp_path / "pairs.parquet", [("http://a.test/x.jpg", "a b c")])
    assert main(["curate", "--input", path, "--output", str(tmp_path / "o"), "--url-col", "URL", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no column 'URL'" in err and "columns found: 'url', 'caption'" in err and "Traceback" not in err


def test_missing_input_and_unknown_option_are_clear_errors(tmp_path, capsys):
    assert main(["curate", "--input", str(tmp_path / "none*.parquet"), "--output", str(tmp_path / "o")]) == 2
    assert "no input file matches" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["curate", "--input", "x.parquet", "--output", "o", "--min-sidee", "3"])
    assert exit_.value.code == 2
    assert "--min-sidee" in capsys.readouterr().err


@pytest.mark.e2e
def test_ledgers_are_written_in_bounded_parts_by_input_position(tmp_path, monkeypatch):
    """No single worker gathers the ledger: rows go to parts by input position, at most LEDGER_PART_ROWS each;
    names and bytes repeat; an overwrite with fewer parts leaves no stale part behind."""
    import pyarrow.parquet as pq

    from aligndata.pipeline import ledger

    rows = [(f"http://a.test/{i}.jpg", f"w{i}") for i in range(10)]  # one word each: all text_too_short
    path = write_pairs(tmp_path / "pairs.parquet", rows)
    monkeypatch.setattr(ledger, "LEDGER_PART_ROWS", 3)
    out = tmp_path / "out"
    assert main(["curate", "--input", path, "--output", str(out), "--dry-run", "--quiet", "--allow-empty"]) == 0
    parts = sorted(p.name for p in (out / "rejected").iterdir())
    assert parts == [f"part-{i:05d}-of-00004.parquet" for i in range(4)]
    sizes = [pq.read_metadata(out / "rejected" / p).num_rows for p in parts]
    assert sizes == [3, 3, 3, 1]
    assert read_ledger(out, "rejected").column("source_row").to_pylist() == list(range(10))
    # every input part has its part in both ledgers, empty ones typed (nothing was kept)
    assert sorted(p.name for p in (out / "candidates").iterdir()) == parts
    assert read_ledger(out, "candidates").num_rows == 0
    first = {p: (out / "rejected" / p).read_bytes() for p in parts}

    again = tmp_path / "again"
    assert main(["curate", "--input", path, "--output", str(again), "--dry-run", "--quiet", "--allow-empty"]) == 0
    assert {p: (again / "rejected" / p).read_bytes() for p in parts} == first

    monkeypatch.setattr(ledger, "LEDGER_PART_ROWS", 5)
    assert main(["curate", "--input", path, "--output", str(out), "--dry-run", "--quiet", "--allow-empty",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "rejected").iterdir()) == ["part-00000-of-00002.parquet",
                                                                     "part-00001-of-00002.parquet"]
    assert main(["inspect", "rejected", str(out), "--output", str(tmp_path / "one.parquet")]) == 0
    assert pq.read_table(tmp_path / "one.parquet").column("source_row").to_pylist() == list(range(10))


def _run_group(fn, kv, *side):
    """Drive one group DoFn over one group: (main outputs, PAIRS outputs, [(part, verdict)] unpacked)."""
    from aligndata.pipeline import packed
    from aligndata.pipeline.outputs import PAIRS, VERDICTS

    fn.start_bundle()
    outs = list(fn.process(kv, *side)) + list(fn.finish_bundle() or ())
    main_, pairs, verdicts = [], [], []
    for out in outs:
        tag = getattr(out, "tag", None)
        if tag == VERDICTS:
            value = out.value
            part, batch = value.value if hasattr(value, "windows") else value  # finish_bundle's are windowed
            verdicts += [(part, packed.unpack_verdict(v)) for v in packed.iter_batch(batch)]
        elif tag == PAIRS:
            pairs.append(out.value)
        else:
            main_.append(out)
    return main_, pairs, sorted(verdicts)


def test_text_pair_and_url_groups_decide_in_two_passes_without_a_list_or_sort(monkeypatch):
    """Copies of one pair arrive in any order: the earliest input position is its first (file 0 precedes file 1),
    every other copy a duplicate naming it, decided in the text group, or in the pair group for a text with too
    many pairs to track (the same verdicts); the URL group then counts distinct texts (capped) and decides the
    first rows: a row's own reason beats the texts-per-image rule."""
    from aligndata.pipeline import packed
    from aligndata.pipeline.config import CurateConfig
    from aligndata.pipeline.curate import AnnotateTextGroup, FirstOfPair, ResolveUrlGroup

    spans = {0: 4, 1: 4}
    url = packed.url_key("http://a.test/x.jpg")
    short, dup = packed.REASON_CODE["text_too_short"], packed.REASON_CODE["duplicate_pair"]
    cfg = CurateConfig(inputs=("x",), output="o", dry_run=True)
    freq = {"allowlist_threshold": 1}

    def text_row(uid, src, row, code=0):
        return packed.TEXT_ROW.pack(url, uid, src, row, code)

    texts = {7: [text_row(b"a" * 16, 0, 9), text_row(b"a" * 16, 0, 3), text_row(b"a" * 16, 1, 2)],
             8: [text_row(b"b" * 16, 1, 0), text_row(b"b" * 16, 0, 7)],
             9: [text_row(b"c" * 16, 0, 5, short)]}
    expected_dups = [((0, 2), (9, dup, b"same pair as file 0 row 3")),
                     ((1, 0), (0, dup, b"same pair as file 0 row 7")),
                     ((1, 0), (2, dup, b"same pair as file 0 row 3"))]

    def firsts_and_dups(max_pairs):
        monkeypatch.setattr(AnnotateTextGroup, "MAX_PAIRS_PER_TEXT", max_pairs)
        text_fn = AnnotateTextGroup(cfg, spans)
        text_fn.setup()
        firsts, dups, hot = [], [], {}
        for text_hash, values in texts.items():
            main_, pairs, verdicts = _run_group(text_fn, (text_hash, values), freq)
            firsts += main_
            dups += verdicts
            for uid, value in pairs:
                hot.setdefault(uid, []).append(value)
        pair_fn = FirstOfPair(cfg, spans)
        pair_fn.setup()
        for uid, values in hot.items():  # the pair group: a hot text's rows
            main_, _, verdicts = _run_group(pair_fn, (uid, values))
            firsts += main_
            dups += verdicts
        return firsts, sorted(dups), len(hot)

    firsts, dups, n_hot = firsts_and_dups(10_000)
    assert n_hot == 0 and dups == expected_dups
    assert firsts_and_dups(0)[1:] == (expected_dups, 3)  # every text over the limit: 3 pair groups, same verdicts
    assert {key for key, _ in firsts} == {url}
    first_rows = [value for _, value in firsts]
    assert sorted(packed.URL_ROW.unpack_from(v)[1:3] for v in first_rows) == [(0, 3), (0, 5), (0, 7)]

    def decide(max_texts):
        fn = ResolveUrlGroup(CurateConfig(inputs=("x",), output="o", dry_run=True, max_texts_per_image=max_texts),
                             spans)
        fn.setup()
        return _run_group(fn, (url, first_rows))[2]

    assert decide(1000) == [((0, 0), (3, packed.KEEP, b"")), ((0, 1), (5, short, b"")),
                            ((0, 1), (7, packed.KEEP, b""))]
    too_many = packed.REASON_CODE["image_too_many_texts"]
    assert decide(2) == [((0, 0), (3, too_many, b"> 2 texts")), ((0, 1), (5, short, b"")),
                         ((0, 1), (7, too_many, b"> 2 texts"))]


def test_input_files_are_spread_over_the_workers(tmp_path):
    """Two or more input files are reshuffled after the Create, so each may be read and prepared by another worker;
    without it everything after the Create fuses into its Impulse's one bundle: one worker reads every file."""
    import apache_beam as beam

    from aligndata.pipeline.config import CurateConfig
    from aligndata.pipeline.curate import build_curate
    from aligndata.pipeline.run import pipeline_options

    def reshuffled(files: int) -> bool:
        paths = [write_pairs(tmp_path / f"pairs-{i}.parquet", [(f"http://a.test/{i}.jpg", "a red bicycle")])
                 for i in range(files)]
        specs = [InputSpec(path=path, index=i, fmt="parquet", url_col="url", caption_col="caption")
                 for i, path in enumerate(paths)]
        p = beam.Pipeline(options=pipeline_options([]))
        build_curate(p, CurateConfig(inputs=tuple(paths), output=str(tmp_path / "out"), dry_run=True), specs)
        names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
        return any(name.startswith("Inputs/MaybeReshuffle/Reshuffle") for name in names)

    assert reshuffled(2)
    assert not reshuffled(1)  # one element: nothing to spread, no extra stages

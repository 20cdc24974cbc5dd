"""`aligndata example`: each bundled row is labelled with the outcome it was made for; check every one."""

import json
from collections import defaultdict
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import webdataset as wds

from aligndata.cli import main
from aligndata.example import build_corpus
from aligndata.localweb import StaticWeb


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

    kept = [json.loads(s["json"]) for tar in sorted(out.glob("*.tar"))
            for s in wds.WebDataset(str(tar), shardshuffle=False)]
    assert kept and all(meta["kind"] == "good" for meta in kept)
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    for r in rejected:
        assert r["reason"] in labels[_key(r["url"], r["caption"])], r
    report = json.loads((out / "report.json").read_text())
    assert len(kept) + len(rejected) == report["input_rows"] == len(corpus)
    assert {r["reason"] for r in rejected} == {k for v in labels.values() for k in v} - {"good"}

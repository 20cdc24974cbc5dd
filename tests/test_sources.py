"""Reading pairs tables: formats, compression, streaming, and the errors a user sees."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_pairs

from aligndata.io.inputs import InputError, InputSpec, detect_format, match_inputs
from aligndata.io.tables import check_input
from aligndata.pipeline.sources import iter_rows


def spec(path, fmt, url_col="url", caption_col="caption", extra=(), header=True):
    return InputSpec(path=str(path), index=0, fmt=fmt, url_col=url_col, caption_col=caption_col,
                     extra_cols=tuple(extra), header=header)


def test_detect_format_by_suffix_including_compression():
    assert detect_format("a/b.parquet") == "parquet"
    assert detect_format("a/b.csv.gz") == "csv"
    assert detect_format("a/b.TSV") == "tsv"
    assert detect_format("a/b.jsonl.gz") == "jsonl"
    assert detect_format("a/b.weird", "csv") == "csv"
    with pytest.raises(InputError, match="--input-format"):
        detect_format("a/b.weird")


def test_match_inputs_expands_globs_sorted_and_deduplicated(tmp_path):
    for name in ("b.csv", "a.csv"):
        (tmp_path / name).write_text("url,caption\n")
    paths = match_inputs([str(tmp_path / "*.csv"), str(tmp_path / "a.csv")])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["a.csv", "b.csv"]
    with pytest.raises(InputError, match="no input file matches"):
        match_inputs([str(tmp_path / "*.parquet")])


def test_parquet_rows_stream_with_extras(tmp_path):
    path = tmp_path / "p.parquet"
    n = 20_000  # more than one read batch
    write_pairs(path, [(f"http://x/{i}.jpg", f"caption {i}") for i in range(n)], license=["cc-by"] * n,
                score=list(range(n)))
    s = spec(path, "parquet", extra=("license", "score"))
    check_input(s)
    rows = list(iter_rows(s))
    assert len(rows) == n
    assert rows[12345] == {"src": 0, "row": 12345, "url": "http://x/12345.jpg", "text": "caption 12345",
                           "extra": {"license": "cc-by", "score": 12345}}


def test_gzipped_csv_and_headerless_tsv(tmp_path):
    path = tmp_path / "p.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('url,caption\nhttp://x/1.jpg,"a caption, with comma"\n')
    assert [r["text"] for r in iter_rows(spec(path, "csv"))] == ["a caption, with comma"]

    tsv = tmp_path / "cc.tsv"
    tsv.write_text("a dog on a beach\thttp://x/d.jpg\n")
    s = spec(tsv, "tsv", url_col="1", caption_col="0", header=False)
    check_input(s)
    assert [(r["url"], r["text"]) for r in iter_rows(s)] == [("http://x/d.jpg", "a dog on a beach")]


def test_jsonl_bad_line_becomes_a_row_not_a_crash(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"url": "http://x/1.jpg", "caption": "ok"}) + "\n{not json\n\n")
    rows = list(iter_rows(spec(path, "jsonl")))
    assert rows[0]["text"] == "ok"
    assert rows[1]["bad"] == "unparsable_json_line" and rows[1]["row"] == 1
    assert len(rows) == 2


def test_undecodable_bytes_are_replaced_so_the_row_can_be_flagged(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"url,caption\nhttp://x/1.jpg,caf\xe9 au lait\n")
    (row,) = iter_rows(spec(path, "csv"))
    assert "\ufffd" in row["text"]


def test_unknown_column_names_the_file_and_lists_columns(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"URL": ["http://x"], "TEXT": ["t"]}), path)
    with pytest.raises(InputError) as err:
        check_input(spec(path, "parquet"))
    message = str(err.value)
    assert str(path) in message and "'url'" in message and "--url-col" in message
    assert "'URL', 'TEXT'" in message


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match="broken.parquet"):
        check_input(spec(path, "parquet"))

"""Hot keys: peak memory of `curate --dry-run` on a corpus with huge text, URL and host groups (issue 14, item 2).

    .venv/bin/python benchmarks/bench_hot_keys.py --scale 1.0 --base-rows 1000000 \\
        --runners fnapi,multi_processing --workers 2 --vocab-size 100000000

What it measures. Two parquet corpora with the SAME number of rows:

  hot      --base-rows ordinary rows (common.synthetic_corpus: the real alt-text distribution) plus, at
           --scale 1.0, exactly the issue's hot keys: one real caption on 2,000,000 distinct URLs, one URL
           carrying 500,000 distinct captions (real captions, each with a distinguishing number as its last
           word), one host (l7.alamy.com, the commonest host in the real data) holding 1,000,000 distinct URLs
           with ordinary captions; plus a few exact duplicate pairs (and triples) of hot rows, so the
           duplicate_pair tie (which copy comes first) is decided inside hot groups. Every row is shuffled with
           a seeded RNG, so the hot rows are spread through the file.
  control  synthetic_corpus of the same total size: no hot keys.

(The hot caption is rejected as text_shared_by_too_many_images and the hot URL's rows as
image_too_many_texts, or earlier reasons: expected; the point is memory and exactness. With a small
--vocab-size, which makes the rare-token rule active, the hot URL's rows go as text_rare_token instead, their
numbers being singleton words; they still all pass through the URL group.)

For each runner (FnApiRunner, and multi_processing with --workers workers) and each corpus it runs
`python -m aligndata.cli curate --input X --output DIR --dry-run --quiet --vocab-size K [beam args]` in a
child process and times it. Peak RSS is sampled from /proc every --sample-interval seconds (0.2) over the
child's whole process tree (multi_processing does its work in grandchild SDK-worker processes, which
RUSAGE_CHILDREN would miss): `peak_rss_tree_mb` is the largest sum of the tree's RSS seen in one sample,
`peak_rss_largest_mb` the largest single process; the same sampler is used on both runners. The sum counts
pages shared between processes (libraries) once per process. `kernel_maxrss_mb` is the kernel's exact ru_maxrss
from wait4 for the child and its waited-for descendants (a cross-check of the largest process; a peak shorter
than the sampling interval can only show there). Goal: hot / control <= 1.3.

Exactness: after the runs, plain_text_stage (aligndata.pipeline.reference, the plain-Python oracle) runs in
this process on the same rows, read the way the pipeline reads them (sources.iter_rows), and every input row's
fate is compared: each row must appear exactly once in DIR/rejected/ + DIR/candidates/, with the reference's
reason (kept rows are the candidates). Mismatches are listed and the script exits 1 when there are any.

Cost: at --scale 1.0 --base-rows 1000000 a corpus has 4.5M rows (3.5M hot + 1M base); on a 2-core machine
one run takes ~30 min or more (four runs, plus the reference twice: budget a few hours), several GB of memory
and a few GB of /tmp (--tmpdir). Try it small first: --scale 0.02 --base-rows 20000. Results go to
benchmarks/results/hot_keys.json (hot_keys_kK.json with a non-default --vocab-size).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common import REPO, emit, real_pairs, synthetic_corpus

sys.path.insert(0, str(REPO))  # the aligndata of this checkout, as for the child runs
from aligndata.inspect.ledger import iter_batches  # noqa: E402
from aligndata.io.inputs import InputSpec  # noqa: E402
from aligndata.pipeline.reference import plain_text_stage  # noqa: E402
from aligndata.pipeline.sources import iter_rows  # noqa: E402

# The sizes at --scale 1.0.
HOT_CAPTION_URLS = 2_000_000
HOT_URL_CAPTIONS = 500_000
HOT_HOST_URLS = 1_000_000
HOT_HOST = "l7.alamy.com"  # the commonest host in the real data
GOAL = 1.3
DEFAULT_VOCAB = 100_000_000
RUNNERS = {"fnapi": lambda workers: [],
           "multi_processing": lambda workers: ["--direct_running_mode", "multi_processing",
                                                "--direct_num_workers", str(workers)]}
KEPT, UNSEEN = 0, 255  # fate codes; rejection reasons get 1, 2, ... in order of first sight


# ------------------------------------------------------------------------------------------------------------
# corpora


def _unique(url: str, key: str, i: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={i}"


def hot_corpus(base_rows: int, scale: float, seed: int) -> tuple[dict, dict]:
    """(columns in generation order, description of the hot keys). Not shuffled yet."""
    rng = random.Random(seed)
    pairs = real_pairs()
    base = synthetic_corpus(base_rows, seed=0)
    urls, captions = base["url"], base["caption"]
    n_caption, n_url, n_host = (round(scale * n) for n in (HOT_CAPTION_URLS, HOT_URL_CAPTIONS, HOT_HOST_URLS))
    groups = {}

    # One caption on n_caption distinct (real, made-unique) URLs: a plain real caption of 5-15 words.
    plain = sorted({t for _, t in pairs if 5 <= len(t.split()) <= 15 and t.isascii() and "&" not in t
                    and "<" not in t and not t.isupper()})
    hot_caption = plain[rng.randrange(len(plain))]
    start = len(urls)
    for i in range(n_caption):
        urls.append(_unique(pairs[rng.randrange(len(pairs))][0], "hot_caption", i))
        captions.append(hot_caption)
    groups["caption"] = (start, len(urls))

    # One URL with n_url distinct captions: real captions, each ending in its own number (distinct after
    # normalization too: the last word differs).
    hot_url = _unique(pairs[rng.randrange(len(pairs))][0], "hot_url", 0)
    start = len(urls)
    for i in range(n_url):
        urls.append(hot_url)
        captions.append(f"{pairs[rng.randrange(len(pairs))][1]} {i}")
    groups["url"] = (start, len(urls))

    # One host with n_host distinct URLs (real URLs of that host, made unique) and ordinary captions.
    host_urls = sorted({u for u, _ in pairs if urlsplit(u).netloc == HOT_HOST})
    host_captions = synthetic_corpus(n_host, seed=seed + 1)["caption"]
    start = len(urls)
    for i in range(n_host):
        urls.append(_unique(host_urls[rng.randrange(len(host_urls))], "hot_host", i))
        captions.append(host_captions[i])
    groups["host"] = (start, len(urls))

    # Exact duplicate pairs inside each hot group: three rows copied, the last of them twice (a triple).
    duplicated = 0
    for lo, hi in groups.values():
        if hi - lo < 3:
            continue
        for copies, row in zip((1, 1, 2), rng.sample(range(lo, hi), 3)):
            for _ in range(copies):
                urls.append(urls[row])
                captions.append(captions[row])
                duplicated += 1
    described = {"caption": hot_caption, "caption_urls": n_caption, "url": hot_url, "url_captions": n_url,
                 "host": HOT_HOST, "host_urls": n_host, "duplicate_copies": duplicated,
                 "hot_rows": len(urls) - base_rows}
    return {"url": urls, "caption": captions}, described


def write_shuffled(columns: dict, path: Path, seed: int) -> None:
    table = pa.table(columns)
    table = table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))
    pq.write_table(table, path)


# ------------------------------------------------------------------------------------------------------------
# memory of a child's process tree


def _process_parents() -> dict[int, int]:
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        parents[int(name)] = int(stat[stat.rfind(b")") + 2:].split()[1])
    return parents


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


PAGE = os.sysconf("SC_PAGE_SIZE")


class TreeSampler(threading.Thread):
    """Samples the RSS of ``root`` and all its descendants every ``interval`` seconds until stopped."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.done = threading.Event()
        self.peak_tree = self.peak_largest = self.peak_root = 0
        self.max_processes = self.samples = 0

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for pid, parent in _process_parents().items():
            children.setdefault(parent, []).append(pid)
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        rss = [_rss_bytes(pid) for pid in tree]
        self.peak_tree = max(self.peak_tree, sum(rss))
        self.peak_largest = max(self.peak_largest, max(rss))
        self.peak_root = max(self.peak_root, rss[0])
        self.max_processes = max(self.max_processes, sum(1 for r in rss if r))
        self.samples += 1

    def run(self) -> None:
        self.sample()
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()


def run_curate(path: Path, out: Path, vocab_size: int, beam_args: list[str], interval: float) -> dict:
    cmd = [sys.executable, "-m", "aligndata.cli", "curate", "--input", str(path), "--output", str(out),
           "--dry-run", "--quiet", "--vocab-size", str(vocab_size), *beam_args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = out.with_suffix(".log")
    with open(log, "wb") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stderr, stderr=stderr)
        sampler = TreeSampler(child.pid, interval)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage, its waited-for descendants included
        seconds = time.perf_counter() - start
        sampler.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace")[-5000:])
        raise SystemExit(f"curate exited {child.returncode}: {' '.join(cmd)}")
    mb = 1 << 20
    return {"seconds": round(seconds, 1), "peak_rss_tree_mb": round(sampler.peak_tree / mb),
            "peak_rss_largest_mb": round(sampler.peak_largest / mb),
            "peak_rss_main_mb": round(sampler.peak_root / mb), "kernel_maxrss_mb": round(usage.ru_maxrss / 1024),
            "processes": sampler.max_processes, "samples": sampler.samples}


# ------------------------------------------------------------------------------------------------------------
# fates: the pipeline's ledgers against the reference


class Codes(dict):
    """reason string -> small int (KEPT for None), assigned on first sight."""

    def __missing__(self, reason):
        self[reason] = len(self) + 1
        if self[reason] >= UNSEEN:
            raise SystemExit("too many distinct reasons")
        return self[reason]

    def name(self, code: int) -> str:
        if code == KEPT:
            return "kept"
        if code == UNSEEN:
            return "absent"
        return next(r for r, c in self.items() if c == code)


def reference_fates(path: Path, vocab_size: int, codes: Codes) -> tuple[np.ndarray, dict]:
    spec = InputSpec(path=str(path), index=0, fmt="parquet", url_col="url", caption_col="caption")
    start = time.perf_counter()
    verdicts, info = plain_text_stage(iter_rows(spec), vocab_size=vocab_size)
    seconds = time.perf_counter() - start
    n = pq.ParquetFile(path).metadata.num_rows
    if len(verdicts) != n or any(src != 0 or not 0 <= row < n for src, row in verdicts):
        raise SystemExit(f"the reference gave {len(verdicts)} verdicts for {n} rows")
    fates = np.full(n, UNSEEN, np.uint8)
    for (_, row), reason in verdicts.items():
        fates[row] = KEPT if reason is None else codes[reason]
    by_reason = Counter(reason or "kept" for reason in verdicts.values())
    del verdicts
    gc.collect()
    return fates, {"seconds": round(seconds, 1), "allowlist_threshold": info["allowlist_threshold"],
                   "distinct_ngrams": info["distinct_ngrams"], "fates": dict(sorted(by_reason.items()))}


def pipeline_fates(out: Path, n: int, codes: Codes) -> tuple[np.ndarray, np.ndarray, set]:
    """(fate code per input row, times each row appears in the ledgers, the source_file values seen)."""
    fates = np.full(n, UNSEEN, np.uint8)
    seen = np.zeros(n, np.int64)
    files: set = set()
    for ledger in ("rejected", "candidates"):
        columns = ["source_file", "source_row"] + (["reason"] if ledger == "rejected" else [])
        for batch in iter_batches(str(out), ledger, columns=columns, batch_size=65536):
            rows = batch.column("source_row").to_numpy(zero_copy_only=False)
            files.update(pc.unique(batch.column("source_file")).to_pylist())
            if ((rows < 0) | (rows >= n)).any():
                raise SystemExit(f"{out}: {ledger} ledger names rows outside 0..{n - 1}")
            if ledger == "rejected":
                encoded = pc.dictionary_encode(batch.column("reason"))
                lookup = np.array([codes[r] for r in encoded.dictionary.to_pylist()] or [0], np.uint8)
                code = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
            else:
                code = KEPT
            np.add.at(seen, rows, 1)
            fates[rows] = code
    return fates, seen, files


def compare(path: Path, out: Path, expected: np.ndarray, codes: Codes) -> dict:
    got, seen, files = pipeline_fates(out, len(expected), codes)
    wrong = (seen != 1) | (got != expected)
    result = {"mismatches": int(wrong.sum()), "absent": int((seen == 0).sum()), "repeated": int((seen > 1).sum()),
              "source_files": sorted(files)}
    # The comparison itself must notice one changed verdict.
    row = int(np.argmin(wrong))  # a row that matched, if any did
    if not wrong[row]:
        flipped = expected.copy()
        flipped[row] = KEPT if flipped[row] != KEPT else UNSEEN - 1
        if int(((seen != 1) | (got != flipped)).sum()) != result["mismatches"] + 1:
            raise SystemExit("the fate comparison does not notice a changed verdict")
    if len(files) != 1 or Path(next(iter(files))).name != path.name:
        result["mismatches"] += 1
        result["source_file_problem"] = True
    if result["mismatches"]:
        rows = np.flatnonzero(wrong)
        pairs = Counter((codes.name(int(expected[r])), codes.name(int(got[r])), int(seen[r])) for r in rows)
        result["by_kind"] = [{"reference": e, "pipeline": g, "times_in_ledgers": s, "rows": c}
                             for (e, g, s), c in pairs.most_common()]
        table = pq.read_table(path).take(pa.array(rows[:20]))
        result["examples"] = [{"row": int(r), "url": u, "caption": t[:120], "reference": codes.name(int(expected[r])),
                               "pipeline": codes.name(int(got[r])), "times_in_ledgers": int(seen[r])}
                              for r, u, t in zip(rows[:20], table.column("url").to_pylist(),
                                                 table.column("caption").to_pylist())]
    return result


# ------------------------------------------------------------------------------------------------------------


def earlier_runs(name: str, args, rows: int) -> dict:
    """An earlier result file made on the same corpora ({} when there is none or it differs)."""
    path = REPO / "benchmarks" / "results" / f"{name}.json"
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = all(earlier.get(key) == value for key, value in
               (("scale", args.scale), ("base_rows", args.base_rows), ("rows", rows),
                ("vocab_size", args.vocab_size), ("seed", args.seed)))
    return earlier if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="hot-key sizes as a fraction of the issue's")
    parser.add_argument("--base-rows", type=int, default=1_000_000, help="ordinary rows in the hot corpus")
    parser.add_argument("--runners", default="fnapi,multi_processing")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers for multi_processing")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB,
                        help="small (e.g. 20000) to make the rare-token rule active")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--sample-interval", type=float, default=0.2, metavar="SECONDS")
    parser.add_argument("--tmpdir", default=None, help="where the corpora and ledgers go (default: system tmp)")
    args = parser.parse_args()
    runners = [r for r in args.runners.split(",") if r]
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown or not runners:
        parser.error(f"--runners: choose from {', '.join(RUNNERS)}")

    with tempfile.TemporaryDirectory(prefix="aligndata-hot-keys-", dir=args.tmpdir) as tmp:
        tmp = Path(tmp)
        paths = {"hot": tmp / "hot.parquet", "control": tmp / "control.parquet"}
        start = time.perf_counter()
        columns, hot = hot_corpus(args.base_rows, args.scale, args.seed)
        rows = len(columns["url"])
        write_shuffled(columns, paths["hot"], args.seed)
        del columns
        write_shuffled(synthetic_corpus(rows, seed=0), paths["control"], args.seed)
        gc.collect()
        print(f"corpora: {rows} rows each ({hot['hot_rows']} hot), built in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)

        runs: dict = {}
        for runner in runners:
            for corpus in ("control", "hot"):
                out = tmp / f"out-{runner}-{corpus}"
                print(f"{runner} / {corpus} ...", file=sys.stderr)
                run = run_curate(paths[corpus], out, args.vocab_size, RUNNERS[runner](args.workers),
                                 args.sample_interval)
                run["rows_per_s"] = round(rows / run["seconds"])
                runs.setdefault(runner, {})[corpus] = run
                print(f"  {run}", file=sys.stderr)

        codes = Codes()
        reference = {}
        for corpus in ("control", "hot"):
            print(f"reference / {corpus} ...", file=sys.stderr)
            expected, reference[corpus] = reference_fates(paths[corpus], args.vocab_size, codes)
            for runner in runners:
                runs[runner][corpus].update(compare(paths[corpus], tmp / f"out-{runner}-{corpus}", expected, codes))
            del expected
        sizes = {corpus: os.path.getsize(p) for corpus, p in paths.items()}

    mismatches = 0
    for runner, both in runs.items():
        both["rss_ratio_tree"] = round(both["hot"]["peak_rss_tree_mb"] / both["control"]["peak_rss_tree_mb"], 3)
        both["rss_ratio_largest"] = round(both["hot"]["peak_rss_largest_mb"]
                                          / both["control"]["peak_rss_largest_mb"], 3)
        both["within_goal"] = both["rss_ratio_tree"] <= GOAL and both["rss_ratio_largest"] <= GOAL
        both["mismatches"] = both["hot"]["mismatches"] + both["control"]["mismatches"]
        both["fates_match"] = both["mismatches"] == 0
        mismatches += both["mismatches"]
    workers = args.workers if "multi_processing" in runners else None
    name = "hot_keys" if args.vocab_size == DEFAULT_VOCAB else f"hot_keys_k{args.vocab_size}"
    # One runner at a time fits a session: keep the other runners' runs from an earlier result on the same
    # corpora (same scale, rows, K and seed), so fnapi and multi_processing end up in one file.
    earlier = earlier_runs(name, args, rows)
    for runner, run in earlier.get("runs", {}).items():
        if runner not in runs:
            runs[runner] = run
            runners.append(runner)
            if runner == "multi_processing":
                workers = earlier.get("workers")
    emit(name, {"scale": args.scale, "base_rows": args.base_rows, "rows": rows, "vocab_size": args.vocab_size,
                "runners": runners, "workers": workers, "seed": args.seed, "goal_ratio": GOAL,
                "sample_interval_s": args.sample_interval, "hot_keys": hot, "input_bytes": sizes,
                "reference": reference, "runs": runs})
    if mismatches:
        raise SystemExit(f"{mismatches} row fates differ from the reference")


if __name__ == "__main__":
    main()

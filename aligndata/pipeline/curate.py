"""The curate pipeline: pairs tables in, WebDataset shards + rejected ledger + report out.

The flow, readable top to bottom in ``build_curate``:

  read rows -> prepare (validate, normalize, per-row text rules, n-gram counts pre-aggregated per bundle)
  n-gram counts -> count histogram -> allowlist threshold c*  (a handful of numbers, never the vocabulary)
  rare n-grams (count < c*) joined with the texts that use them -> rare texts      (skipped when c* <= 1)
  group by text  -> distinct image URLs per text (capped), rare flag
  group by URL   -> duplicate pairs, distinct texts per URL (capped), final text reason; one fetch per URL
  shards by URL-hash range, before fetching: one worker downloads (thread pool), decodes, checks, re-encodes
  and writes each shard, so image bytes are never shuffled; the rejected ledger in parts; report.json last

Every DoFn with side effects writes through a temporary name and renames, so a retried bundle is harmless.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from aligndata.extract.pages import ExtractStats, pairs_from_page
from aligndata.filters import reasons, registry
from aligndata.filters.frequency import (
    CappedDistinct,
    allowlist_threshold,
    hash64,
    ngram_hashes,
    rare_token_reason,
    shared_text_reason,
    too_many_texts_reason,
)
from aligndata.filters.text import tokenize, word_ngrams
from aligndata.pipeline import fetch_stage, ledger, report, shard_assign
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.outputs import EXTRACTION, FETCH_STATS, NAMESPACE, NGRAMS, PAGE_URLS, REJECTS, emit, reject
from aligndata.fetch.client import FetchConfig, Fetcher
from aligndata.pipeline.progress import ProgressWriter
from aligndata.pipeline.candidates import prepare_row
from aligndata.io.inputs import WEB_FORMATS, InputSpec
from aligndata.pipeline.sources import iter_rows, page_urls

# Bounded per-bundle pre-aggregation: flush before a bundle's dict holds more than this many keys.
NGRAM_FLUSH_KEYS = 200_000
PAIR_FLUSH_KEYS = 200_000
# An allowlist this small is looked up in a Python set (~50 ns a lookup); larger, in the sorted array itself
# (a set costs ~60 bytes a hash, the array 8).
SET_LOOKUP_MAX = 2_000_000
_ROW, _RARE = 0, 1  # tags of a text group's values: a row, or the text's rarest n-gram (count, n-gram)


class ReadRows(beam.DoFn):
    PROGRESS_EVERY = 1000

    def __init__(self, progress_dir: str | None = None):
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)
        self.rows = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, spec: InputSpec):
        if spec.fmt == "page-urls":  # the pages are fetched (and their rows made) by FetchPages
            stats = ExtractStats()
            for page_index, url in enumerate(page_urls(spec, stats)):
                yield emit(PAGE_URLS, (spec.index, page_index, url))
            if stats.unreadable_files:  # skipped (--skip-unreadable): named in the report
                yield emit(EXTRACTION, stats.to_json())
            return
        stats = ExtractStats() if spec.fmt in WEB_FORMATS else None
        n = 0
        for raw in iter_rows(spec, stats):
            n += 1
            if n == self.PROGRESS_EVERY:
                self.rows.inc(n)
                self.progress.add(rows_read=n)
                n = 0
            yield raw
        self.rows.inc(n)
        self.progress.add(rows_read=n)
        self.progress.flush()
        if stats is not None:
            yield emit(EXTRACTION, stats.to_json())


class FetchPages(beam.DoFn):
    """page-urls inputs: fetch pages (same guard, caps and retries as images) and extract their pairs."""

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg

    def setup(self):
        self.fetcher = Fetcher(FetchConfig.from_options(self.cfg, self.cfg.max_page_bytes))
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.fetch_threads, thread_name_prefix="aligndata-pages")
        self.progress = ProgressWriter(self.cfg.progress_dir)

    def teardown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def process(self, batch):
        stats = ExtractStats()
        results = self.pool.map(lambda item: pairs_from_page(item[2], self.fetcher, item[0], item[1]), batch)
        for rows, page_stats in results:
            stats.merge(page_stats)
            self.progress.add(rows_read=len(rows))
            yield from rows
        yield emit(EXTRACTION, stats.to_json())


class MergeExtractStats(beam.CombineFn):
    """Extraction counters (ExtractStats as JSON) from every file and page batch; None when there were none."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, element):
        stats = ExtractStats.from_json(element)
        return stats if acc is None else acc.merge(stats)

    def merge_accumulators(self, accs):
        present = [a for a in accs if a is not None]
        if not present:
            return None
        total = present[0]
        for other in present[1:]:
            total.merge(other)
        return total

    def extract_output(self, acc):
        return None if acc is None else acc.to_json()


class PrepareRows(beam.DoFn):
    """Validate and normalize rows; count unigrams+bigrams over the raw corpus, pre-aggregated per bundle."""

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg

    def setup(self):
        self.progress = ProgressWriter(self.cfg.progress_dir)
        self.rules = registry.row_rules(self.cfg)

    def start_bundle(self):
        self.counts = collections.Counter()
        self.invalid = 0

    def process(self, raw):
        cand, words = prepare_row(raw, self.rules, self.cfg.page_url_col)
        if words is None:
            self.invalid += 1
            yield emit(REJECTS, reject(cand, cand["reason"], cand["detail"]))
            return
        self.counts.update(ngram_hashes(words))
        if len(self.counts) > NGRAM_FLUSH_KEYS:
            yield from (emit(NGRAMS, kv) for kv in self.counts.items())
            self.counts.clear()
        yield cand

    def finish_bundle(self):
        for kv in self.counts.items():
            yield emit(NGRAMS, kv, from_finish_bundle=True)
        self.counts.clear()
        self.progress.add(rejected=self.invalid)
        self.progress.flush()


class ThresholdFn(beam.CombineFn):
    """(count, number of n-grams with that count) pairs -> the allowlist threshold c* and its context."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        count, n = element
        acc[count] = acc.get(count, 0) + n
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            for count, n in acc.items():
                out[count] = out.get(count, 0) + n
        return out

    def extract_output(self, acc):
        threshold = allowlist_threshold(acc, self.vocab_size)
        return {
            "vocab_size": self.vocab_size,
            "distinct_ngrams": sum(acc.values()),
            "allowlist_threshold": threshold,
            "allowlist_size": sum(n for count, n in acc.items() if count >= threshold),
        }


class AllowlistFn(beam.CombineFn):
    """The allowlist (hashes of the n-grams with count >= c*) as one sorted numpy uint64 array, or None once it
    holds more than ``max_hashes`` (the memory budget: 8 bytes a hash, broadcast to every worker)."""

    CHUNK = 65_536

    def __init__(self, max_hashes: int):
        self.max_hashes = max_hashes

    def create_accumulator(self):
        return [[], []]  # numpy chunks, a list being filled; None: over budget

    @staticmethod
    def _size(acc) -> int:
        return sum(len(c) for c in acc[0]) + len(acc[1])

    def add_input(self, acc, element):
        if acc is None:
            return None
        acc[1].append(element)
        if len(acc[1]) >= self.CHUNK:  # the budget is checked a chunk at a time, and exactly at the end
            acc[0].append(np.array(acc[1], dtype=np.uint64))
            acc[1] = []
            if self._size(acc) > self.max_hashes:
                return None
        return acc

    def merge_accumulators(self, accs):
        out = [[], []]
        for acc in accs:
            if acc is None:
                return None
            out[0].extend(acc[0])
            out[1].extend(acc[1])
        return None if self._size(out) > self.max_hashes else out

    def extract_output(self, acc):
        if acc is None or self._size(acc) > self.max_hashes:
            return None
        return np.sort(np.concatenate([*acc[0], np.array(acc[1], dtype=np.uint64)]))


class RareNgramTextPairs(beam.DoFn):
    """(n-gram, text) pairs for the rare-token join, deduplicated per bundle; nothing at all when c* <= 1.

    With the allowlist as a side input, a row sends only its rare n-grams (those not in the allowlist) to the
    join, which then only looks up their counts: about 1 pair per rejected text instead of ~19 per passing
    text, and no join group for a frequent n-gram. Over the memory budget (allowlist None), every n-gram goes to
    the join as before. Same verdicts and details either way.
    """

    def setup(self):
        self._allow_id = None  # the side input the lookup was built from: rebuilt only when it changes

    def start_bundle(self):
        self.pairs = {}

    def _allowed(self, allowlist):
        if allowlist is not self._allow_id:  # the side input's object: build the lookup once per worker
            self._allow_id = allowlist
            self._small = set(allowlist.tolist()) if len(allowlist) <= SET_LOOKUP_MAX else None
        return self._small

    def process(self, cand, freq, allowlist):
        if freq["allowlist_threshold"] <= 1:
            return
        grams = word_ngrams(tokenize(cand["caption"]))
        hashes = [hash64(g) for g in grams]
        if allowlist is None:
            rare = zip(hashes, grams)
        elif (small := self._allowed(allowlist)) is not None:
            rare = [(h, g) for h, g in zip(hashes, grams) if h not in small]
        else:
            values = np.array(hashes, dtype=np.uint64)
            at = np.minimum(np.searchsorted(allowlist, values), len(allowlist) - 1)
            rare = [(h, g) for h, g, found in zip(hashes, grams, allowlist[at] == values) if not found]
        text_hash = cand["text_hash"]
        for gram_hash, gram in rare:
            self.pairs[(gram_hash, text_hash)] = gram
        if len(self.pairs) > PAIR_FLUSH_KEYS:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush(from_finish_bundle=True)

    def _flush(self, from_finish_bundle=False):
        for (gram_hash, text_hash), gram in self.pairs.items():
            yield emit(None, (gram_hash, (text_hash, gram)), from_finish_bundle)
        self.pairs = {}


def _rare_texts_of_ngram(kv):
    """For a rare n-gram: (text hash, (its count, the n-gram)) for every text using it."""
    _, grouped = kv
    counts = grouped["count"]
    if not counts:
        return
    count = counts[0]
    for text_hash, gram in grouped["texts"]:
        yield text_hash, (count, gram)


class AnnotateTextGroup(beam.DoFn):
    """All rows sharing one lowercased text: count their distinct image URLs (capped) and mark rare tokens.

    The group (a GroupByKey of rows and at most one rare-token marker, told apart by tag) is read in two streamed
    passes and never listed, so a caption on millions of URLs costs this worker the URL counter only (at most
    --max-images-per-text + 1 hashes): the first pass finds the marker and counts, the second decides.
    """

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg

    def process(self, kv, freq):
        _, tagged = kv
        rare = None
        urls = CappedDistinct(self.cfg.max_images_per_text)
        for tag, value in tagged:
            if tag == _RARE:
                rare = value if rare is None else min(rare, value)
            else:
                urls.add(hash64(value["url"]))
        rare_reason = rare is not None and rare_token_reason(rare[0], freq["allowlist_threshold"])
        shared = shared_text_reason(urls.count, self.cfg.max_images_per_text)
        for tag, row in tagged:  # a GroupByKey's values may be iterated again (runners re-read them)
            if tag == _RARE:
                continue
            if rare_reason:
                row = dict(row, reason=reasons.TEXT_RARE_TOKEN,
                           detail=f"{rare[1]!r} seen {rare[0]}x < {freq['allowlist_threshold']}")
            elif shared:
                row = dict(row, reason=reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES,
                           detail=f"> {self.cfg.max_images_per_text} images")
            yield row["url"], row


class ResolveUrlGroup(beam.DoFn):
    """All rows naming one image URL: duplicates, texts-per-image rule, final text verdict; survivors go on."""

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg

    def setup(self):
        self.progress = ProgressWriter(self.cfg.progress_dir)

    def finish_bundle(self):
        self.progress.flush()

    def process(self, kv):
        """Two streamed passes over the group, no sort of it: the first counts distinct texts (capped) and keeps
        each uid's first input position (one pair of ints per distinct caption, not the rows); the second
        decides every row. Only the survivors are held: at most --max-texts-per-image distinct captions."""
        url, rows = kv
        texts = CappedDistinct(self.cfg.max_texts_per_image)
        first_at: dict[str, tuple[int, int]] = {}
        for row in rows:
            texts.add(row["text_hash"])
            at = (row["src"], row["row"])
            known = first_at.get(row["uid"])
            if known is None or at < known:
                first_at[row["uid"]] = at
        too_many = too_many_texts_reason(texts.count, self.cfg.max_texts_per_image)
        survivors = []
        n = 0
        for row in rows:  # a GroupByKey's values may be iterated again (runners re-read them; no list is made)
            n += 1
            first = first_at[row["uid"]]
            if first != (row["src"], row["row"]):
                detail = f"same pair as file {first[0]} row {first[1]}"
                yield emit(REJECTS, reject(row, reasons.DUPLICATE_PAIR, detail))
            elif row["reason"]:
                yield emit(REJECTS, reject(row, row["reason"], row["detail"]))
            elif too_many:
                yield emit(REJECTS, reject(row, too_many, f"> {self.cfg.max_texts_per_image} texts"))
            else:
                survivors.append(row)
        survivors.sort(key=lambda r: (r["src"], r["row"]))  # bounded: one row per distinct caption, <= the cap
        self.progress.add(rejected=n - len(survivors))
        if survivors:
            Metrics.counter(NAMESPACE, "urls_to_fetch").inc()
            if self.cfg.dry_run:
                self.progress.add(kept=len(survivors))
            else:
                self.progress.add(urls_to_fetch=1)
            yield url, survivors


def build_curate(p: beam.Pipeline, cfg: CurateConfig, specs: list[InputSpec]):
    """Add the whole curate flow to ``p``."""
    read = (
        p
        | "Inputs" >> beam.Create(specs, reshuffle=False)
        | "Read" >> beam.ParDo(ReadRows(cfg.progress_dir)).with_outputs(PAGE_URLS, EXTRACTION, main="rows")
    )
    if any(spec.fmt in WEB_FORMATS for spec in specs):
        pages = (
            read[PAGE_URLS]
            | "SpreadPages" >> beam.Reshuffle()
            | "BatchPages" >> beam.BatchElements(min_batch_size=1, max_batch_size=4 * cfg.fetch_threads)
            | "FetchPages" >> beam.ParDo(FetchPages(cfg)).with_outputs(EXTRACTION, main="rows")
        )
        raw = (read.rows, pages.rows) | "AllRows" >> beam.Flatten()
        extraction_parts = (read[EXTRACTION], pages[EXTRACTION]) | "AllExtraction" >> beam.Flatten()
    else:  # pairs only: no page to fetch, and ~20 fewer transforms to build and run (~0.2 s of fixed cost)
        raw, extraction_parts = read.rows, read[EXTRACTION]
    extraction = extraction_parts | "ExtractionTotals" >> beam.CombineGlobally(MergeExtractStats())
    prepared = raw | "Prepare" >> beam.ParDo(PrepareRows(cfg)).with_outputs(REJECTS, NGRAMS, main="candidates")
    candidates = prepared.candidates

    # Allowlist threshold from the histogram of n-gram counts.
    ngram_counts = prepared[NGRAMS] | "SumNgrams" >> beam.CombinePerKey(sum)
    freq = (
        ngram_counts
        | "CountOfCount" >> beam.Map(lambda kv: (kv[1], 1))
        | "Histogram" >> beam.CombinePerKey(sum)
        | "Threshold" >> beam.CombineGlobally(ThresholdFn(cfg.vocab_size))
    )
    freq_side = beam.pvalue.AsSingleton(freq)

    # Texts holding an n-gram below the threshold.
    rare_ngrams = ngram_counts | "RareNgrams" >> beam.Filter(
        lambda kv, f: kv[1] < f["allowlist_threshold"], f=freq_side
    )
    allowlist = (
        ngram_counts
        | "Allowed" >> beam.Filter(lambda kv, f: 1 < f["allowlist_threshold"] <= kv[1], f=freq_side)
        | "AllowedHashes" >> beam.Keys()
        | "Allowlist" >> beam.CombineGlobally(AllowlistFn(cfg.allowlist_memory_mb * 2**20 // 8))
    )
    passing = candidates | "TextRulesPassed" >> beam.Filter(lambda c: not c["reason"])
    pairs = passing | "NgramTextPairs" >> beam.ParDo(RareNgramTextPairs(), freq_side,
                                                     beam.pvalue.AsSingleton(allowlist))
    rare_texts = (
        {"count": rare_ngrams, "texts": pairs}
        | "JoinRare" >> beam.CoGroupByKey()
        | "RareTexts" >> beam.FlatMap(_rare_texts_of_ngram)
        | "MinRare" >> beam.CombinePerKey(min)
    )

    # Group by text, then by URL.
    # Not a CoGroupByKey: Beam's Python CoGroupByKey builds a list of each side, the whole group in memory.
    by_text = passing | "KeyByText" >> beam.Map(lambda c: (c["text_hash"], (_ROW, c)))
    rare_marks = rare_texts | "TagRare" >> beam.Map(lambda kv: (kv[0], (_RARE, kv[1])))
    text_checked = (
        (by_text, rare_marks)
        | "RowsAndMarks" >> beam.Flatten()
        | "GroupByText" >> beam.GroupByKey()
        | "TextGroup" >> beam.ParDo(AnnotateTextGroup(cfg), freq_side)
    )
    failed_text = (
        candidates
        | "TextRulesFailed" >> beam.Filter(lambda c: bool(c["reason"]))
        | "KeyByUrl" >> beam.Map(lambda c: (c["url"], c))
    )
    resolved = (
        (text_checked, failed_text)
        | "AllByUrl" >> beam.Flatten()
        | "GroupByUrl" >> beam.GroupByKey()
        | "UrlGroup" >> beam.ParDo(ResolveUrlGroup(cfg)).with_outputs(REJECTS, main="to_fetch")
    )

    rejects = [prepared[REJECTS], resolved[REJECTS]]
    if cfg.dry_run:
        kept = resolved.to_fetch | "Candidates" >> beam.FlatMap(lambda kv: kv[1])
        kept_count = kept | "WriteCandidates" >> ledger.WriteCandidates(cfg, specs)
        shard_stats = None
        fetch_stats = None
    else:
        fetched = (
            resolved.to_fetch
            | "AssignShards" >> shard_assign.AssignShards(cfg.samples_per_shard)
            | "FetchShards" >> beam.ParDo(fetch_stage.FetchShard(cfg)).with_outputs(
                REJECTS, FETCH_STATS, main="shard_stats"
            )
        )
        rejects.append(fetched[REJECTS])
        fetch_stats = fetched[FETCH_STATS] | "FetchTotals" >> beam.CombineGlobally(report.SumCounts())
        shard_stats = fetched.shard_stats
        kept_count = None

    all_rejects = rejects | "AllRejects" >> beam.Flatten()
    reason_counts = (
        all_rejects
        | "Reasons" >> beam.Map(lambda r: {r["reason"]: 1})
        | "ReasonTotals" >> beam.CombineGlobally(report.SumCounts())
    )
    rejected_written = all_rejects | "WriteRejected" >> ledger.WriteRejected(cfg, specs)
    rows_read = raw | "CountRows" >> beam.combiners.Count.Globally()

    side = {
        "extraction": beam.pvalue.AsSingleton(extraction),
        "rows_read": beam.pvalue.AsSingleton(rows_read),
        "reason_counts": beam.pvalue.AsSingleton(reason_counts),
        "freq": freq_side,
        "rejected_written": beam.pvalue.AsSingleton(rejected_written),
    }
    if shard_stats is not None:
        side["shard_stats"] = beam.pvalue.AsList(shard_stats)
        side["fetch_stats"] = beam.pvalue.AsSingleton(fetch_stats)
    if kept_count is not None:
        side["candidates_written"] = beam.pvalue.AsSingleton(kept_count)
    return p | "Once" >> beam.Create([None]) | "Report" >> beam.Map(report.write_final, cfg=cfg, **side)

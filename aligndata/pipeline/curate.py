"""The curate pipeline: pairs tables in, WebDataset shards + rejected ledger + report out.

The flow, readable top to bottom in ``build_curate``:

  read rows -> prepare (validate, normalize, per-row text rules, n-gram counts pre-aggregated per bundle)
  n-gram counts -> count histogram -> allowlist threshold c*  (a handful of numbers, never the vocabulary)
  rare n-grams (count < c*) joined with the texts that use them -> rare texts      (skipped when c* <= 1)
  group by text  -> distinct image URLs per text (capped), rare flag
  group by pair  -> the first row of each (URL, caption) pair; every other copy is a duplicate
  group by URL   -> distinct texts per URL (capped), each row's final verdict
  group by ledger part -> each row's record meets its verdict: the ledgers' parts (dry run), or rows to fetch
  shards by URL-hash range, before fetching: one worker downloads (thread pool), decodes, checks, re-encodes
  and writes each shard, so image bytes are never shuffled; the rejected ledger in parts; report.json last

What each shuffle carries (see ``packed.py``): a row's text and extra columns cross one shuffle, as one packed
record keyed by its ledger part; the text, pair and URL groups carry only 128-bit keys, input positions and a
reason code, and every group is read in streamed passes with capped state (bounds in each DoFn's docstring).

Every DoFn with side effects writes through a temporary name and renames, so a retried bundle is harmless.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from aligndata.extract.pages import ExtractStats, pairs_from_page
from aligndata.filters import language, reasons, registry
from aligndata.filters.frequency import (
    CappedDistinct,
    allowlist_threshold,
    hashes64,
    ngram_hashes,
    rare_token_reason,
    shared_text_reason,
    too_many_texts_reason,
)
from aligndata.filters.text import tokenize, word_ngrams
from aligndata.pipeline import fetch_stage, ledger, ngram_counts, packed, report, shard_assign
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.outputs import (
    EXTRACTION, FETCH_STATS, NAMESPACE, NGRAMS, PAGE_URLS, PAIRS, RECORDS, REJECTS, TEXTS, VERDICTS, emit,
)
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
    """Validate and normalize rows and apply the row rules; count unigrams+bigrams, pre-aggregated per bundle.

    Every row leaves as its packed record, batched by ledger part (RECORDS); a valid row also leaves as a few
    fixed-size bytes for its text group (main output), which decides the corpus rules. Passing texts, once per
    bundle, go to the rare-token join (TEXTS). Held per bundle: at most NGRAM_FLUSH_KEYS n-gram counts and
    texts, and the record batcher's bound.
    """

    def __init__(self, cfg: CurateConfig, spans: dict[int, int]):
        self.cfg = cfg
        self.spans = spans

    def setup(self):
        self.progress = ProgressWriter(self.cfg.progress_dir)
        self.rules = registry.row_rules(self.cfg)
        self.tag = language.fields if language.detection_on(self.cfg) else None

    def start_bundle(self):
        self.counts = collections.Counter()
        self.texts_seen = set()  # bounded: cleared with the counts
        self.records = packed.PartBatcher(packed.RECORD)
        self.invalid = 0

    def process(self, raw):
        cand, words = prepare_row(raw, self.rules, self.cfg.page_url_col, self.tag)
        src, row = cand["src"], cand["row"]
        code = packed.REASON_CODE[cand["reason"]] if cand["reason"] else packed.KEEP
        record = packed.pack_record(cand, code, final=words is None)
        for batch in self.records.add(ledger.part_of(src, row, self.spans), record):
            yield emit(RECORDS, batch)
        if words is None:
            self.invalid += 1
            return
        self.counts.update(ngram_hashes(words))
        if len(self.counts) > NGRAM_FLUSH_KEYS:
            yield from (emit(NGRAMS, kv) for kv in ngram_counts.bucket_counts(self.counts))
            self.counts.clear()
            self.texts_seen.clear()
        text_hash = cand["text_hash"]
        yield text_hash, packed.TEXT_ROW.pack(packed.url_key(cand["url"]), packed.uid_bytes(cand["uid"]), src, row,
                                              code)
        if not code and text_hash not in self.texts_seen:
            self.texts_seen.add(text_hash)
            yield emit(TEXTS, (text_hash, cand["caption"]))

    def finish_bundle(self):
        for kv in ngram_counts.bucket_counts(self.counts):
            yield emit(NGRAMS, kv, from_finish_bundle=True)
        for batch in self.records.flush():
            yield emit(RECORDS, batch, from_finish_bundle=True)
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
    """The allowlist (hashes of the n-grams with count >= c*, arriving as one array a bucket) as one sorted numpy
    uint64 array, or None once it holds more than ``max_hashes`` (the memory budget: 8 bytes a hash, broadcast
    to every worker)."""

    def __init__(self, max_hashes: int):
        self.max_hashes = max_hashes

    def create_accumulator(self):
        return [0]  # [hashes held, array, array, ...]; None: over budget

    def _checked(self, acc):
        return None if acc is None or acc[0] > self.max_hashes else acc

    def add_input(self, acc, element):
        if acc is not None:
            acc[0] += len(element)
            acc.append(element)
        return self._checked(acc)

    def merge_accumulators(self, accs):
        out = [0]
        for acc in accs:
            if acc is None:
                return None
            out[0] += acc[0]
            out.extend(acc[1:])
        return self._checked(out)

    def extract_output(self, acc):
        if self._checked(acc) is None:
            return None
        return np.sort(np.concatenate(acc[1:])) if len(acc) > 1 else np.empty(0, dtype=np.uint64)


class RareNgramTextPairs(beam.DoFn):
    """(n-gram, text) pairs for the rare-token join, deduplicated per bundle; nothing at all when c* <= 1.

    Input: (text hash, caption) of the texts that passed the row rules.

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

    def process(self, text, freq, allowlist):
        text_hash, caption = text
        if freq["allowlist_threshold"] <= 1:
            return
        grams = word_ngrams(tokenize(caption))
        hashes = hashes64(grams)
        if allowlist is None or not len(allowlist):  # over the budget: the join decides; empty: all are rare
            rare = zip(hashes, grams)
        elif (small := self._allowed(allowlist)) is not None:
            rare = [(h, g) for h, g in zip(hashes, grams) if h not in small]
        else:
            _, found = ngram_counts.find_sorted(allowlist, np.array(hashes, dtype=np.uint64))
            rare = [(h, g) for h, g, allowed in zip(hashes, grams, found) if not allowed]
        for gram_hash, gram in rare:
            self.pairs[(gram_hash, text_hash)] = gram
        if len(self.pairs) > PAIR_FLUSH_KEYS:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush(from_finish_bundle=True)

    def _flush(self, from_finish_bundle=False):
        """The pairs, one batch a bucket of their n-gram's hash (the join's key: see ngram_counts)."""
        for kv in ngram_counts.bucket_pairs(self.pairs):
            yield emit(None, kv, from_finish_bundle)
        self.pairs = {}


class _VerdictBatches:
    """Base of the DoFns that decide rows: verdicts batched by ledger part within a bundle (bounded), progress."""

    def __init__(self, cfg: CurateConfig, spans: dict[int, int]):
        self.cfg = cfg
        self.spans = spans

    def setup(self):
        self.progress = ProgressWriter(self.cfg.progress_dir)
        self.duplicate = packed.REASON_CODE[reasons.DUPLICATE_PAIR]

    def start_bundle(self):
        self.verdicts = packed.PartBatcher(packed.VERDICT)

    def verdict(self, src: int, row: int, code: int, detail: bytes = b""):
        for batch in self.verdicts.add(ledger.part_of(src, row, self.spans), packed.pack_verdict(row, code, detail)):
            yield emit(VERDICTS, batch)

    def finish_bundle(self):
        for batch in self.verdicts.flush():
            yield emit(VERDICTS, batch, from_finish_bundle=True)
        self.progress.flush()


def _duplicate_detail(first) -> bytes:
    return f"same pair as file {first[0]} row {first[1]}".encode()


@beam.typehints.with_output_types(tuple[bytes, bytes])  # the main output (inference would see the tagged ones)
class AnnotateTextGroup(_VerdictBatches, beam.DoFn):
    """All valid rows sharing one lowercased text: count the distinct image URLs of those that passed the row
    rules (capped), mark rare tokens, and find each (URL, caption) pair's first row.

    The group (a GroupByKey of packed rows and at most one rare-token marker, a tuple) is read in two streamed
    passes and never listed. The first counts URLs (at most --max-images-per-text + 1 keys), finds the marker and
    keeps each pair's earliest position, up to MAX_PAIRS_PER_TEXT pairs; the second decides. A text with more
    pairs than that (a caption on millions of URLs) sends its rows to the pair group instead (PAIRS), which
    needs O(1) a pair: this worker's state stays bounded however hot the text.
    """

    MAX_PAIRS_PER_TEXT = 10_000

    def _text_verdict(self, rare, urls, freq) -> tuple[int, bytes]:
        threshold = freq["allowlist_threshold"]
        if rare is not None and rare_token_reason(rare[0], threshold):
            detail = f"{rare[1]!r} seen {rare[0]}x < {threshold}"
            return packed.REASON_CODE[reasons.TEXT_RARE_TOKEN], detail.encode("utf-8", errors="surrogatepass")
        if shared_text_reason(urls.count, self.cfg.max_images_per_text):
            return (packed.REASON_CODE[reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES],
                    f"> {self.cfg.max_images_per_text} images".encode())
        return packed.KEEP, b""

    def process(self, kv, freq):
        text_hash, values = kv
        rare = None
        urls = CappedDistinct(self.cfg.max_images_per_text)
        firsts: dict[bytes, tuple[int, int]] | None = {}
        for value in values:
            if not isinstance(value, bytes):
                rare = value if rare is None else min(rare, value)
                continue
            url_key, uid, src, row, code = packed.TEXT_ROW.unpack(value)
            if not code:  # rows that failed a row rule do not count towards the images of a text
                urls.add(url_key)
            if firsts is not None:
                known = firsts.get(uid)
                if known is None:
                    firsts[uid] = (src, row)
                    if len(firsts) > self.MAX_PAIRS_PER_TEXT:
                        firsts = None  # a hot text: its pairs are decided in the pair group
                elif (src, row) < known:
                    firsts[uid] = (src, row)
        text_code, text_detail = self._text_verdict(rare, urls, freq)
        rejected = 0
        for value in values:  # a GroupByKey's values may be iterated again (runners re-read them)
            if not isinstance(value, bytes):
                continue
            url_key, uid, src, row, code = packed.TEXT_ROW.unpack(value)
            detail = b""
            if not code:
                code, detail = text_code, text_detail
            if firsts is None:
                yield emit(PAIRS, (uid, packed.PAIR_ROW.pack(url_key, text_hash, src, row, code) + detail))
            elif firsts[uid] != (src, row):
                rejected += 1
                yield from self.verdict(src, row, self.duplicate, _duplicate_detail(firsts[uid]))
            else:
                yield url_key, packed.URL_ROW.pack(text_hash, src, row, code) + detail
        if rejected:
            self.progress.add(rejected=rejected)


@beam.typehints.with_output_types(tuple[bytes, bytes])
class FirstOfPair(_VerdictBatches, beam.DoFn):
    """The rows of a hot text, keyed by pair (uid): the earliest input position is the pair's first row, every
    other copy a duplicate_pair naming it (that verdict beats every other). Two streamed passes, O(1) state
    however many copies; first rows go on to their URL group."""

    def process(self, kv):
        _, values = kv
        first = min(packed.PAIR_ROW.unpack_from(value)[2:4] for value in values)
        copies = 0
        for value in values:
            url_key, text_hash, src, row, code = packed.PAIR_ROW.unpack_from(value)
            if (src, row) == first:
                yield url_key, packed.URL_ROW.pack(text_hash, src, row, code) + value[packed.PAIR_ROW.size:]
            else:
                copies += 1
                yield from self.verdict(src, row, self.duplicate, _duplicate_detail(first))
        if copies:
            self.progress.add(rejected=copies)


class ResolveUrlGroup(_VerdictBatches, beam.DoFn):
    """The first rows of every pair naming one image URL: texts-per-image rule and the final verdict of each.

    Two streamed passes, no list and no sort of the group: the first counts distinct texts (capped: at most
    --max-texts-per-image + 1 hashes), the second decides every row. Verdicts go to the rows' ledger parts.
    """

    def setup(self):
        super().setup()
        self.too_many_code = packed.REASON_CODE[reasons.IMAGE_TOO_MANY_TEXTS]
        self.too_many_detail = f"> {self.cfg.max_texts_per_image} texts".encode()
        self.urls_to_fetch = Metrics.counter(NAMESPACE, "urls_to_fetch")

    def process(self, kv):
        _, values = kv
        texts = CappedDistinct(self.cfg.max_texts_per_image)
        for value in values:
            texts.add(value[:8])  # the text hash
        too_many = too_many_texts_reason(texts.count, self.cfg.max_texts_per_image)
        kept = rejected = 0
        for value in values:  # a GroupByKey's values may be iterated again (runners re-read them; no list is made)
            _, src, row, code = packed.URL_ROW.unpack_from(value)
            if code:
                rejected += 1
                yield from self.verdict(src, row, code, value[packed.URL_ROW.size:])
            elif too_many:
                rejected += 1
                yield from self.verdict(src, row, self.too_many_code, self.too_many_detail)
            else:
                kept += 1
                yield from self.verdict(src, row, packed.KEEP)
        self.progress.add(rejected=rejected)
        if kept:
            self.urls_to_fetch.inc()
            if self.cfg.dry_run:
                self.progress.add(kept=kept)
            else:
                self.progress.add(urls_to_fetch=1)


def build_curate(p: beam.Pipeline, cfg: CurateConfig, specs: list[InputSpec]):
    """Add the whole curate flow to ``p``."""
    read = (
        p
        # Beam's Create reshuffles its elements when there are two or more: each input file is then read and
        # prepared by whichever worker takes it. Without that, everything after the Create fuses into the one
        # bundle of its Impulse, and one worker reads and prepares every file of the corpus (on Flink and Dataflow
        # too). One file is one element: one worker, as any unsplit file.
        | "Inputs" >> beam.Create(specs)
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
    # CombineGlobally(...).as_singleton_view() throughout: the same value (the CombineFn's own value of nothing
    # when the input is empty) without the default-injecting branch, two fused stages less each (~60 ms apiece
    # on the local runner; issue 17's fixed cost).
    extraction = extraction_parts | "ExtractionTotals" >> beam.CombineGlobally(
        MergeExtractStats()).as_singleton_view()
    spans = ledger.part_spans(specs)
    prepared = raw | "Prepare" >> beam.ParDo(PrepareRows(cfg, spans)).with_outputs(
        RECORDS, NGRAMS, TEXTS, main="by_text")
    records = prepared[RECORDS]
    part_keys, part_list = ledger.part_keys(records)

    # Allowlist threshold from the histogram of n-gram counts (bucketed sorted arrays, see ngram_counts.py).
    ngram_table = prepared[NGRAMS] | "SumNgrams" >> beam.CombinePerKey(ngram_counts.MergeCounts())
    freq_side = (
        ngram_table
        | "CountOfCount" >> beam.FlatMap(ngram_counts.histogram)
        | "Histogram" >> beam.CombinePerKey(sum)
        | "Threshold" >> beam.CombineGlobally(ThresholdFn(cfg.vocab_size)).as_singleton_view()
    )

    # Texts holding an n-gram below the threshold.
    rare_tables = ngram_table | "RareNgrams" >> beam.Map(ngram_counts.rare, freq=freq_side)
    allowlist = (
        ngram_table
        | "AllowedHashes" >> beam.FlatMap(ngram_counts.allowed, freq=freq_side)
        | "Allowlist" >> beam.CombineGlobally(AllowlistFn(cfg.allowlist_memory_mb * 2**20 // 8))
    )  # with its default branch: the value is a numpy array, which a side input's default cannot be
    pairs = prepared[TEXTS] | "NgramTextPairs" >> beam.ParDo(RareNgramTextPairs(), freq_side,
                                                             beam.pvalue.AsSingleton(allowlist))
    rare_texts = (
        (rare_tables, pairs)
        | "CountsAndTexts" >> beam.Flatten()
        | "JoinRare" >> beam.GroupByKey()  # one key a bucket: its rare counts and its pairs' batches
        | "RareTexts" >> beam.FlatMap(ngram_counts.rare_texts)
        | "MinRare" >> beam.CombinePerKey(min)
    )

    # The corpus rules, on packed positions and hashes: by text (and pair), then by URL.
    text_checked = (
        (prepared.by_text, rare_texts)
        | "RowsAndMarks" >> beam.Flatten()
        | "GroupByText" >> beam.GroupByKey()
        | "TextGroup" >> beam.ParDo(AnnotateTextGroup(cfg, spans), freq_side).with_outputs(
            PAIRS, VERDICTS, main="firsts")
    )
    hot_pairs = (
        text_checked[PAIRS]
        | "GroupByPair" >> beam.GroupByKey()
        | "PairGroup" >> beam.ParDo(FirstOfPair(cfg, spans)).with_outputs(VERDICTS, main="firsts")
    )
    url_verdicts = (
        (text_checked.firsts, hot_pairs.firsts)
        | "AllFirsts" >> beam.Flatten()
        | "GroupByUrl" >> beam.GroupByKey()
        | "UrlGroup" >> beam.ParDo(ResolveUrlGroup(cfg, spans)).with_outputs(VERDICTS)
    )

    # Each row's record meets its verdict in its ledger part.
    applied = (
        (records, text_checked[VERDICTS], hot_pairs[VERDICTS], url_verdicts[VERDICTS])
        | "RecordsAndVerdicts" >> beam.Flatten()
        | "GroupByPart" >> beam.GroupByKey()  # one key per part: at most LEDGER_PART_ROWS rows each
        | "ApplyVerdicts" >> beam.ParDo(ledger.ApplyVerdicts(cfg, specs), part_list).with_outputs(
            ledger.REASONS, ledger.WRITTEN, REJECTS, main="kept")
    )
    reason_parts = [applied[ledger.REASONS]]
    side = {"freq": freq_side}
    if cfg.dry_run:
        side["written"] = (applied[ledger.WRITTEN]
                           | "WrittenTotals" >> beam.CombineGlobally(report.SumCounts()).as_singleton_view())
    else:
        fetched = (
            applied.kept
            | "AssignShards" >> shard_assign.AssignShards(cfg.samples_per_shard)
            | "FetchShards" >> beam.ParDo(fetch_stage.FetchShard(cfg)).with_outputs(
                REJECTS, FETCH_STATS, main="shard_stats"
            )
        )
        fetch_rejects = fetched[REJECTS]
        reason_parts.append(fetch_rejects | "FetchReasons" >> beam.Map(lambda r: {r["reason"]: 1}))
        keyed = fetch_rejects | "FetchRejectParts" >> beam.Map(lambda r: (ledger.part_of(r["src"], r["row"], spans), r))
        rejected_written = (
            (applied[REJECTS], keyed)
            | "AllRejects" >> beam.Flatten()
            | "WriteRejected" >> ledger.WriteRejected(cfg, specs, part_keys, part_list)
        )
        side["written"] = beam.pvalue.AsSingleton(  # no part at all (no input row): nothing rejected
            rejected_written | "AsWritten" >> beam.Map(lambda n: {"rejected": n}), default_value={"rejected": 0})
        side["shard_stats"] = beam.pvalue.AsList(fetched.shard_stats)
        side["fetch_stats"] = (fetched[FETCH_STATS]
                               | "FetchTotals" >> beam.CombineGlobally(report.SumCounts()).as_singleton_view())
    reason_counts = reason_parts | "AllReasons" >> beam.Flatten() | "ReasonTotals" >> beam.CombineGlobally(
        report.SumCounts()).as_singleton_view()
    side.update(
        extraction=extraction,
        rows_read=raw | "CountRows" >> beam.CombineGlobally(beam.combiners.CountCombineFn()).as_singleton_view(),
        reason_counts=reason_counts,
    )
    return p | "Final" >> beam.Create([None]) | "Report" >> beam.Map(_finish, cfg=cfg, specs=specs, keys=part_list,
                                                                     **side)


def _finish(_, cfg, specs, keys, **side):
    """The last step: with no input row there is no ledger part, so the empty ones go first; then the report."""
    ledger.write_empty_ledgers(cfg, specs, keys)
    return report.write_final(_, cfg, **side)

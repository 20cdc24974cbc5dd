"""A plain-Python, single-process, in-memory implementation of the text and frequency stage (no Beam).

Two jobs: it is the speed floor the Beam pipeline is measured against (benchmarks/bench_text_stage.py), and an
independent oracle for the pipeline's verdicts (tests/test_curate_dry_run.py). It applies the same rules
through the same functions, but with plain dicts and Counters and one pass in input order.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from aligndata.filters import reasons
from aligndata.filters.frequency import (
    allowlist_threshold,
    distinct_ngram_hashes,
    hash64,
    ngram_hashes,
    rare_token_reason,
    shared_text_reason,
    too_many_texts_reason,
)
from aligndata.filters.registry import row_rules, rule_options
from aligndata.filters.text import tokenize
from aligndata.pipeline.candidates import prepare_row


def plain_text_stage(rows, min_words=3, max_words=20, vocab_size=100_000_000, max_images_per_text=10,
                     max_texts_per_image=1000, **row_options):
    """rows: raw row dicts in input order. Returns (verdicts, info): verdicts maps (src, row) -> reason or None.
    ``row_options``: the row rules' other options (``languages=("en",)``, ``boilerplate=False``, ...)."""
    rules = row_rules(rule_options(min_words=min_words, max_words=max_words, **row_options))
    counts: Counter = Counter()
    candidates = []
    verdicts = {}
    for raw in rows:
        cand, words = prepare_row(raw, rules)
        if words is None:
            verdicts[(cand["src"], cand["row"])] = cand["reason"]
            continue
        counts.update(ngram_hashes(words))
        candidates.append(cand)
    histogram = Counter(counts.values())
    threshold = allowlist_threshold(histogram, vocab_size)

    urls_per_text = defaultdict(set)
    texts_per_url = defaultdict(set)
    for cand in candidates:
        urls_per_text[cand["text_hash"]].add(hash64(cand["url"]))
        texts_per_url[cand["url"]].add(cand["text_hash"])

    seen = set()
    for cand in candidates:
        key = (cand["src"], cand["row"])
        if cand["uid"] in seen:
            verdicts[key] = reasons.DUPLICATE_PAIR
            continue
        seen.add(cand["uid"])
        reason = cand["reason"]
        if not reason and threshold > 1:
            lowest = min(counts[h] for h in distinct_ngram_hashes(tokenize(cand["caption"])))
            reason = rare_token_reason(lowest, threshold)
        if not reason:
            reason = shared_text_reason(len(urls_per_text[cand["text_hash"]]), max_images_per_text)
        if not reason:
            reason = too_many_texts_reason(len(texts_per_url[cand["url"]]), max_texts_per_image)
        verdicts[key] = reason
    info = {"allowlist_threshold": threshold, "distinct_ngrams": len(counts)}
    return verdicts, info

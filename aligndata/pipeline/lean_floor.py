"""The leanest plain-Python, single-process loop that gives the text stage's verdicts: the benchmark's floor.

`lean_text_stage` takes the same arguments and returns the same ``(verdicts, info)`` as
``reference.plain_text_stage`` (which stays the tests' oracle), and applies every rule the pipeline applies
through the same functions: ``invalid_detail`` (URL and caption length, broken encoding, ``check_url``'s scheme,
host, port and control-character checks, empty text), ``normalize_text``, ``tokenize``, the registry's row rules
in reason order (word-count bounds, boilerplate), the allowlist threshold c* from the n-gram count histogram,
the rare-token, texts-per-image and images-per-text rules, and duplicate pairs (the first in input order wins).
It skips only work that no verdict needs:

* no sample key: a pair is deduplicated on its ``(url, caption)`` strings, not on sha256(url + TAB + caption)
  (the same thing: neither a valid URL nor a normalized caption holds a tab);
* no 64-bit hashes: texts are keyed by the lowercased caption, URLs by themselves, and n-grams are counted by
  the token (unigram) and the token pair (bigram) in one Counter (a token holds no space, so the pair names the
  same bigram as the "a b" string the pipeline hashes). The pipeline counts and joins hash64 values, so the two
  agree unless two n-grams, texts or URLs share a 63-bit hash;
* no candidate dict, no extra columns or page URL, no detail strings beyond what the row rules return;
* the rare-token lookup reuses the row's tokens from the first pass (no second tokenize) and takes the min over
  all of the row's n-grams (the same min as over the distinct ones), and runs only when c* > 1;
* a duplicate pair is decided as it is read: it still counts its n-grams (counts are over all valid rows, as in
  the pipeline), but the row rules are not run on it (a duplicate's reason outranks theirs) and its URL and text
  are already in the distinct sets.

Precedence is the pipeline's (curate.ResolveUrlGroup): invalid_row, duplicate_pair, the row rules, then
text_rare_token, text_shared_by_too_many_images, image_too_many_texts. The distinct-count sets are not capped:
a cap bounds memory on a worker, and costs a length check per row here.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from aligndata.filters import reasons
from aligndata.filters.frequency import (
    allowlist_threshold,
    rare_token_reason,
    shared_text_reason,
    too_many_texts_reason,
)
from aligndata.filters.registry import row_rules, rule_options
from aligndata.filters.text import normalize_text, tokenize
from aligndata.pipeline.candidates import invalid_detail

_INVALID = reasons.INVALID_ROW
_DUPLICATE = reasons.DUPLICATE_PAIR


def lean_text_stage(rows, min_words=3, max_words=20, vocab_size=100_000_000, max_images_per_text=10,
                    max_texts_per_image=1000, **row_options):
    """rows: raw row dicts in input order. Returns (verdicts, info): verdicts maps (src, row) -> reason or None.
    ``row_options``: the row rules' other options (``languages=("en",)``, ``boilerplate=False``, ...)."""
    rules = row_rules(rule_options(min_words=min_words, max_words=max_words, **row_options))
    counts: Counter = Counter()  # unigram str / bigram (str, str) -> occurrences over all valid rows
    urls_per_text = defaultdict(set)  # lowercased caption -> distinct URLs
    texts_per_url = defaultdict(set)  # URL -> distinct lowercased captions
    seen = set()  # (url, caption) pairs met so far
    passing = []  # (key, lowercased caption, url, words) of rows that no row rule rejected
    verdicts = {}
    count = counts.update
    for raw in rows:
        key = (raw["src"], raw["row"])
        url = (raw.get("url") or "").strip()
        text = raw.get("text")
        if raw.get("bad") or invalid_detail(url, text) is not None:
            verdicts[key] = _INVALID
            continue
        caption = normalize_text(text)
        if not caption:
            verdicts[key] = _INVALID
            continue
        words = tokenize(caption)
        count(words)
        count(zip(words, words[1:]))
        pair = (url, caption)
        if pair in seen:
            verdicts[key] = _DUPLICATE
            continue
        seen.add(pair)
        lower = caption.lower()
        urls_per_text[lower].add(url)
        texts_per_url[url].add(lower)
        for reason, decide in rules:
            if decide(caption, words):
                verdicts[key] = reason
                break
        else:
            passing.append((key, lower, url, words))

    threshold = allowlist_threshold(Counter(counts.values()), vocab_size)
    get = counts.__getitem__  # every n-gram of a passing row was counted
    for key, lower, url, words in passing:
        reason = None
        # A row without n-grams (possible only with --min-words 0) has nothing rare, as in the pipeline.
        if threshold > 1 and words:
            lowest = min(min(map(get, words)), min(map(get, zip(words, words[1:])), default=threshold))
            reason = rare_token_reason(lowest, threshold)
        if not reason:
            reason = shared_text_reason(len(urls_per_text[lower]), max_images_per_text)
        if not reason:
            reason = too_many_texts_reason(len(texts_per_url[url]), max_texts_per_image)
        verdicts[key] = reason
    return verdicts, {"allowlist_threshold": threshold, "distinct_ngrams": len(counts)}

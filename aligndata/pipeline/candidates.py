"""Turning one raw input row into a candidate: validation, normalization, uid and the registered row rules.

Pure Python (the Beam DoFns in ``curate.py`` call it), so the same logic is unit-testable and reusable by the
plain-Python floor in ``benchmarks/``.
"""

from __future__ import annotations

from aligndata.filters import reasons
from aligndata.filters.frequency import hash64
from aligndata.filters.text import MAX_CAPTION_CHARS, MAX_URL_CHARS, has_broken_encoding, normalize_text, tokenize
from aligndata.fetch.guard import check_url
from aligndata.shards.contract import make_uid  # re-exported: the pipeline's modules and tests import it here


def _invalid(raw: dict, url: str, text: str, detail: str) -> dict:
    return {
        "uid": make_uid(url, text),
        "url": url,
        "caption": text,
        "src": raw["src"],
        "row": raw["row"],
        "reason": reasons.INVALID_ROW,
        "detail": detail,
    }


def invalid_detail(url: str, text: str | None) -> str | None:
    if not url:
        return "missing_url"
    if len(url) > MAX_URL_CHARS:
        return f"url_too_long:{len(url)}"
    if has_broken_encoding(url):
        return "broken_encoding:url"
    problem = check_url(url)
    if problem:
        return problem
    if text is None or not text.strip():
        return "empty_text"
    if len(text) > MAX_CAPTION_CHARS:
        return f"caption_too_long:{len(text)}"
    if has_broken_encoding(text):
        return "broken_encoding:caption"
    return None


def prepare_row(raw: dict, rules, page_url_col: str | None = None, tag=None):
    """Validate and normalize one raw row, then apply the row rules.

    ``rules`` is ``registry.row_rules(options)``: (reason, decide) pairs in reason order; the first rule whose
    decide returns a detail rejects the row. Returns ``(candidate, words)``: ``words`` is the lowercased
    word-token list used for corpus statistics, or None for an invalid row (invalid rows take no part in the
    statistics). ``candidate["reason"]`` holds the row rule that failed, if any; corpus-level rules are decided
    later.

    ``tag`` (language detection on: ``language.fields``) maps a caption to fields added to the row's extra
    columns when every row rule passed; they travel in its packed record to the sample's .json and parquet.
    Run options make sure no input column of the same name is carried (``run.check_language_options``).
    """
    url = (raw.get("url") or "").strip()
    text = raw.get("text")
    if raw.get("bad"):
        return _invalid(raw, url, text or "", raw["bad"]), None
    detail = invalid_detail(url, text)
    caption = normalize_text(text) if detail is None else ""
    if detail is None and not caption:
        detail = "empty_text"
    if detail is not None:
        return _invalid(raw, url, (text or "")[:MAX_CAPTION_CHARS], detail), None

    extra = dict(raw.get("extra") or {})
    page_url = extra.pop(page_url_col, None) if page_url_col else None
    words = tokenize(caption)
    reason, detail = None, ""
    for rule_reason, decide in rules:
        found = decide(caption, words)
        if found:
            reason, detail = rule_reason, found
            break
    if tag is not None and reason is None:
        extra.update(tag(caption))
    candidate = {
        "uid": make_uid(url, caption),
        "url": url,
        "caption": caption,
        "page_url": page_url,
        "extra": extra,
        "src": raw["src"],
        "row": raw["row"],
        "text_hash": hash64(caption.lower()),
        "reason": reason,
        "detail": detail,
    }
    return candidate, words

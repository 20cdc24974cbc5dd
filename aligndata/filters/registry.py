"""The rule registry: every rule declared once, in the order that decides which reason a row gets.

A declaration holds the rule's reason code, the stage it runs in, the funnel stage it reports under, what it
checks (the caption or the image), the paper's wording, its options (flag, type, default, help) and the
function that decides. Everything else is made from this list: the reason order (`REASONS`), report.json's
funnel, the report page's rule sections, `curate`'s options and config fields, `aligndata rules`, and the
README's rule table (a test fails when README and registry disagree).

Adding a row rule (one that judges a caption on its own) is one function, one registration and one test:

    def not_shouting(opts, caption, words):          # filters/text.py
        return "all caps" if caption.isupper() else None

    Rule("text_all_caps", ROW, "text_rules", CAPTION, "the caption is written in capitals",
         decide=text.not_shouting, options=(Option("--no-all-caps", True, "...", action="store_false",
         dest="all_caps"),), enabled_by="all_caps")

The row stage (pipeline/candidates.py) loops over `row_rules(opts)`; rules of the other stages are decided
by the stage that holds what they need (corpus counts, the URL group, the fetched bytes), which calls the
function named here.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any, Callable

from aligndata.filters import frequency, image, language, reasons, text
from aligndata.filters.dedup import DEFAULT_EVAL_HAMMING
from aligndata.filters.nsfw import DEFAULT_MODE as NSFW_DEFAULT_MODE
from aligndata.filters.nsfw import DEFAULT_THRESHOLD as NSFW_DEFAULT_THRESHOLD
from aligndata.filters.options import Option, non_negative_int, positive_float, positive_int, unit_interval
from aligndata.filters.options import defaults as option_defaults

# Stages, in pipeline order: where a rule is decided.
ROW = "row"  # one input row on its own (pipeline/candidates.py)
TEXT_GROUP = "text_group"  # every row sharing one lowercased caption, with the corpus n-gram counts
PAIR_GROUP = "pair_group"  # every copy of one (URL, caption) pair (found in its text group)
URL_GROUP = "url_group"  # the first row of every pair naming one image URL
FETCH = "fetch"  # the download (fetch/client.py)
IMAGE = "image"  # the decoded image (images/process.py)
CONTENT = "content"  # what the image shows (images/content_checks.py)
STAGES = (ROW, TEXT_GROUP, PAIR_GROUP, URL_GROUP, FETCH, IMAGE, CONTENT)

# What a rule judges: report.html shows example captions of every caption rule, even when it dropped nothing.
CAPTION = "caption"
IMAGE_URL = "image"
ROW_FIELDS = "row"


@dataclass(frozen=True)
class Rule:
    reason: str  # the stable reason code written to rejected/ and report.json
    stage: str  # one of STAGES
    funnel: str  # report.json's funnel stage that counts this rule's drops
    judges: str  # CAPTION, IMAGE_URL or ROW_FIELDS
    summary: str  # what the rule drops, in one line
    paper: str | None = None  # the ALIGN paper's wording, when the rule is the paper's
    options: tuple[Option, ...] = ()  # options this rule owns (command line + config)
    see: tuple[str, ...] = ()  # options owned elsewhere (fetching) that shape this rule
    decide: Callable | None = None  # the deciding function (row rules: decide(opts, caption, words) -> detail)
    decided_in: str = ""  # where the stage calls it, for `aligndata rules` and the code map
    enabled_by: str | None = None  # a config field that turns the rule off when false/empty

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "stage": self.stage,
            "funnel": self.funnel,
            "judges": self.judges,
            "summary": self.summary,
            "paper": self.paper,
            "options": [{"flag": o.flag, "dest": o.dest, "default": o.default, "help": o.help}
                        for o in self.options],
            "see": list(self.see),
            "decided_in": self.decided_in,
        }


RULES: tuple[Rule, ...] = (
    Rule(reasons.INVALID_ROW, ROW, "valid_rows", ROW_FIELDS,
         "no usable URL or caption: missing, unsupported or overlong URL, empty caption, broken encoding",
         decided_in="pipeline/candidates.py: invalid_detail"),
    Rule(reasons.DUPLICATE_PAIR, PAIR_GROUP, "unique_pairs", ROW_FIELDS,
         "the same URL and caption as an earlier input row",
         decided_in="pipeline/curate.py: AnnotateTextGroup (FirstOfPair for a hot text)"),
    Rule(reasons.TEXT_TOO_SHORT, ROW, "text_rules", CAPTION, "captions with fewer than --min-words words",
         paper="alt-texts that are too short (<3 unigrams)",
         options=(Option("--min-words", 3, "keep captions with >= this many words", type=non_negative_int),),
         decide=text.too_short, decided_in="filters/text.py: too_short"),
    Rule(reasons.TEXT_TOO_LONG, ROW, "text_rules", CAPTION, "captions with more than --max-words words",
         paper="alt-texts that are too long (>20 unigrams)",
         options=(Option("--max-words", 20, "keep captions with <= this many words", type=positive_int),),
         decide=text.too_long, decided_in="filters/text.py: too_long"),
    Rule(reasons.TEXT_TOO_FEW_CHARACTERS, ROW, "text_rules", CAPTION,
         "captions shorter than --min-chars characters (off by default; LAION, COYO and DataComp use it)",
         options=(Option("--min-chars", 0, "keep captions with >= this many characters (0: off)",
                         type=non_negative_int),),
         decide=text.too_few_characters, decided_in="filters/text.py: too_few_characters", enabled_by="min_chars"),
    Rule(reasons.TEXT_BOILERPLATE, ROW, "text_rules", CAPTION,
         'captions that are only boilerplate: "1920x1080", "alt_img", "IMG_1234.jpg", bare URLs, placeholders',
         options=(Option("--no-boilerplate", True, "turn off the boilerplate rule (camera file names, "
                         "resolutions, bare URLs, placeholders)", action="store_false"),),
         decide=text.boilerplate, decided_in="filters/text.py: boilerplate", enabled_by="boilerplate"),
    # After the cheap rules: the detector costs tens of us a caption, so it sees only captions that passed them, and
    # a caption that is boilerplate ("IMG_1234.jpg") has no language to speak of (that reason is the truer one).
    Rule(reasons.TEXT_LANGUAGE, ROW, "text_rules", CAPTION,
         "captions not in one of --languages (or below --min-language-score); off by default",
         options=(Option("--languages", (), "keep only captions detected in these languages (ISO 639-1 codes, "
                         "e.g. en or en,de; docs/language.md); every kept sample gets language and language_score",
                         type=language.language_codes, metavar="en[,de,...]", shown_default="off"),
                  Option("--min-language-score", language.DEFAULT_MIN_SCORE, "with --languages: also drop captions "
                         "whose detected language scores below this (0-1; docs/language.md)", type=unit_interval,
                         metavar="SCORE"),
                  Option("--detect-language", False, "tag every kept sample with language and language_score "
                         "without dropping any (implied by --languages)", action="store_true")),
         decide=language.wrong_language, decided_in="filters/language.py: wrong_language", enabled_by="languages"),
    Rule(reasons.TEXT_RARE_TOKEN, TEXT_GROUP, "frequency_rules", CAPTION,
         "captions with an n-gram outside the --vocab-size most frequent unigrams+bigrams of the raw corpus",
         paper="alt-texts that contain any rare token (outside of 100 million most frequent unigrams and "
               "bigrams from the raw dataset)",
         options=(Option("--vocab-size", 100_000_000, "allowlist size: the most frequent unigrams+bigrams of the "
                         "raw corpus", type=non_negative_int),),
         decide=frequency.rare_token_reason, decided_in="pipeline/curate.py: AnnotateTextGroup"),
    Rule(reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES, TEXT_GROUP, "frequency_rules", CAPTION,
         "captions shared by more than --max-images-per-text distinct image URLs",
         paper="alt-texts that are shared by more than 10 images",
         options=(Option("--max-images-per-text", 10, "drop a caption shared by more than this many image URLs "
                         "(0: off)", type=non_negative_int),),
         decide=frequency.shared_text_reason, decided_in="pipeline/curate.py: AnnotateTextGroup"),
    Rule(reasons.IMAGE_TOO_MANY_TEXTS, URL_GROUP, "frequency_rules", IMAGE_URL,
         "image URLs with more than --max-texts-per-image distinct captions",
         paper="images that have more than 1000 associated alt-texts",
         options=(Option("--max-texts-per-image", 1000, "drop an image URL with more than this many distinct "
                         "captions (0: off)", type=non_negative_int),),
         decide=frequency.too_many_texts_reason, decided_in="pipeline/curate.py: ResolveUrlGroup"),
    Rule(reasons.ROBOTS_DISALLOWED, FETCH, "downloaded", IMAGE_URL,
         "the server opts out: X-Robots-Tag noai/noimageai/noindex/noimageindex; robots.txt with "
         "--respect-robots-txt", see=("--respect-robots-txt", "--robots-timeout"),
         decided_in="fetch/client.py: Fetcher.fetch"),
    Rule(reasons.BLOCKED_ADDRESS, FETCH, "downloaded", IMAGE_URL,
         "private, loopback, link-local or reserved addresses (after DNS and on every redirect)",
         see=("--allow-private-networks",), decided_in="fetch/guard.py: check_hop, connect_guarded"),
    Rule(reasons.DOWNLOAD_FAILED, FETCH, "downloaded", IMAGE_URL,
         "HTTP errors, timeouts, the byte cap, too many redirects, unusable URLs",
         see=("--timeout", "--total-timeout", "--max-download-bytes", "--retries"),
         decided_in="fetch/client.py: Fetcher.fetch"),
    Rule(reasons.IMAGE_FILE_TOO_SMALL, IMAGE, "image_rules", IMAGE_URL,
         "downloaded files smaller than --min-image-bytes bytes, judged before decoding (off by default; LAION "
         "and COYO drop images under 5 KB)",
         options=(Option("--min-image-bytes", 0, "keep downloaded images of >= this many bytes (0: off)",
                         type=non_negative_int),),
         decided_in="images/process.py: process_image", enabled_by="min_image_bytes"),
    Rule(reasons.DECODE_FAILED, IMAGE, "image_rules", IMAGE_URL,
         "bytes that are not a decodable raster image, or more pixels than --max-pixels (a pixel bomb)",
         options=(Option("--max-pixels", image.DEFAULT_MAX_PIXELS, "decompression-bomb limit",
                         type=positive_int),),
         decide=image.decode_image, decided_in="images/process.py: process_image"),
    Rule(reasons.IMAGE_TOO_SMALL, IMAGE, "image_rules", IMAGE_URL,
         "images whose shorter side is <= --min-side px (strict, as in the paper)",
         paper="only keep images whose shorter dimension is larger than 200 pixels",
         options=(Option("--min-side", 200, "keep images whose shorter side is > this (strict)",
                         type=non_negative_int),),
         decide=image.image_size_reason, decided_in="images/process.py: process_image"),
    Rule(reasons.ASPECT_RATIO_TOO_LARGE, IMAGE, "image_rules", IMAGE_URL,
         "images whose long/short side ratio is >= --max-aspect-ratio (strict, as in the paper)",
         paper="and aspect ratio is smaller than 3",
         options=(Option("--max-aspect-ratio", 3.0, "keep images whose long/short ratio is < this (strict)",
                         type=positive_float),),
         decide=image.image_size_reason, decided_in="images/process.py: process_image"),
    Rule(reasons.EVAL_SET_DUPLICATE, CONTENT, "dedup_and_safety", IMAGE_URL,
         "near-duplicates (pHash within --eval-hamming bits, or of the mirror) of evaluation images",
         paper="remove duplicates or near-duplicates of test images in all downstream evaluation datasets "
               "(e.g., ILSVRC-2012, Flickr30K, and MSCOCO)",
         options=(Option("--eval-index", None, "drop near-duplicates of these eval images (built by aligndata "
                         "eval-index build)", metavar="INDEX", shown_default="off"),
                  Option("--eval-hamming", DEFAULT_EVAL_HAMMING, "max pHash Hamming distance to an eval image or "
                         "its mirror (default from docs/dedup.md)", type=non_negative_int, metavar="T")),
         decide=None, decided_in="images/content_checks.py: ImageChecks.check_image", enabled_by="eval_index"),
    Rule(reasons.NSFW, CONTENT, "dedup_and_safety", IMAGE_URL,
         "pornographic images: caption/URL keywords by default, or an image model (--nsfw nudenet, a plugin)",
         paper="remove pornographic images",
         options=(Option("--nsfw", NSFW_DEFAULT_MODE, "off | keywords | nudenet | module:function "
                         "(comma-separated to combine); ALIGN removed pornographic images, so the default is "
                         "keywords", metavar="MODE"),
                  Option("--nsfw-threshold", NSFW_DEFAULT_THRESHOLD, "image scores >= this are NSFW",
                         type=float)),
         decided_in="images/content_checks.py: ImageChecks.check_text, check_image"),
)

REASONS: tuple[str, ...] = tuple(rule.reason for rule in RULES)
BY_REASON: dict[str, Rule] = {rule.reason: rule for rule in RULES}
OPTIONS: tuple[Option, ...] = tuple(o for rule in RULES for o in rule.options)
# report.json's funnel: (stage, its reasons), in order; each stage keeps the rows that pass all reasons so far.
FUNNEL: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (stage, tuple(r.reason for r in RULES if r.funnel == stage))
    for stage in dict.fromkeys(r.funnel for r in RULES)
)
CAPTION_RULES: tuple[str, ...] = tuple(r.reason for r in RULES if r.judges == CAPTION)


def defaults() -> dict[str, Any]:
    """{config field: default} for every rule option."""
    return option_defaults(OPTIONS)


def rule_options(**overrides) -> types.SimpleNamespace:
    """The rules' options as attributes (defaults, then ``overrides``): for code that runs rules outside a
    curate run (the plain-Python reference, tests)."""
    unknown = set(overrides) - set(defaults())
    if unknown:
        raise TypeError(f"unknown rule options: {sorted(unknown)}")
    return types.SimpleNamespace(**{**defaults(), **overrides})


def _enabled(rule: Rule, opts) -> bool:
    return rule.enabled_by is None or bool(getattr(opts, rule.enabled_by))


def row_rules(opts) -> list[tuple[str, Callable[[str, list[str]], str | None]]]:
    """The active row rules in reason order, as (reason, decide(caption, words) -> detail or None)."""
    return [(r.reason, functools.partial(r.decide, opts)) for r in RULES
            if r.stage == ROW and r.decide is not None and _enabled(r, opts)]


def check() -> None:
    """The registry's own invariants (called by the tests): unique codes and flags, known stages, row rules
    decide, every reason constant registered."""
    assert len(set(REASONS)) == len(REASONS), "duplicate reason code"
    flags = [o.flag for o in OPTIONS]
    assert len(set(flags)) == len(flags), "an option is declared twice"
    for rule in RULES:
        assert rule.stage in STAGES, rule
        assert rule.judges in (CAPTION, IMAGE_URL, ROW_FIELDS), rule
        assert rule.decided_in, rule
        if rule.stage == ROW and rule.reason != reasons.INVALID_ROW:
            assert rule.decide is not None, f"row rule {rule.reason} has no decide function"
    constants = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert constants <= set(REASONS), f"reason constants without a rule: {sorted(constants - set(REASONS))}"


# ------------------------------------------------------------------------------------------------ documents


def _code(text_: str) -> str:
    return f"`{text_}`"


def markdown_table() -> str:
    """README's rule table, made from the registry (README holds it between markers; a test compares)."""
    lines = ["| rule | the paper's wording | option | default | reason code | stage |",
             "|---|---|---|---|---|---|"]
    for rule in RULES:
        owned = ", ".join(_code(o.flag) for o in rule.options)
        see = ", ".join(_code(f) for f in rule.see)
        option = owned or (f"see {see}" if see else "—")
        default = ", ".join(o.default_text() for o in rule.options) or "—"
        paper = f'"{rule.paper}"' if rule.paper else "—"
        summary = rule.summary.replace("|", "\\|")
        lines.append(f"| {summary} | {paper} | {option} | {default} | {_code(rule.reason)} | {rule.stage} |")
    return "\n".join(lines) + "\n"


def text_table() -> str:
    """`aligndata rules`: one block per rule, in reason order."""
    out = []
    for i, rule in enumerate(RULES, 1):
        out.append(f"{i:2d}. {rule.reason}  [{rule.stage}; funnel {rule.funnel}]")
        out.append(f"    {rule.summary}")
        if rule.paper:
            out.append(f'    paper: "{rule.paper}"')
        for o in rule.options:
            out.append(f"    option {o.flag} (default {o.default_text()}): {o.help}")
        if rule.see:
            out.append(f"    shaped by {', '.join(rule.see)}")
        out.append(f"    decided in {rule.decided_in}")
    return "\n".join(out) + "\n"

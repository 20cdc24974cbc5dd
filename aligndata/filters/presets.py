"""Published curation recipes as presets: `curate --preset align|coyo|datacomp-basic|laion`.

A preset is a set of rule options, each with the sentence of the source it comes from; options given on the
command line override it. What a recipe does that curate cannot do alone is said too: steps that need a model
(LAION's CLIP threshold) are printed as the `score` + `subset` commands to run next, and steps we do not
implement are listed as such, so no one mistakes a preset for more than it is.

Boundaries are exact: our rules keep a shorter side ``> --min-side`` and an aspect ratio ``< --max-aspect-ratio``
(ALIGN's strict wording). A recipe that keeps ``>= 200`` px sets 199 (sides are integers), and one that keeps
a ratio ``<= 3.0`` sets the next float above 3.0: for integer sides, long/short > 3 is at least 3 + 1/short,
far above float rounding, so ``ratio < nextafter(3.0)`` is exactly ``ratio <= 3.0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# "Off" for the rules a recipe did not use. The rare-token rule has no off value of its own (K = 0 means an
# empty allowlist); a K above any corpus's number of distinct n-grams puts every n-gram in the allowlist, so c*
# is 1, nothing is rare and the join never runs.
RARE_TOKEN_OFF = 2**63 - 1
ASPECT_AT_MOST_3 = math.nextafter(3.0, math.inf)
MAX_WORDS_OFF = 10**9
ASPECT_OFF = 1e9  # finite, so config.json stays strict JSON

ALIGN_PAPER = "Jia et al., Scaling Up Visual and Vision-Language Representation Learning With Noisy Text " \
              "Supervision, ICML 2021, section 3"
COYO_README = "kakaobrain/coyo-dataset README, 'Data Filtering' (COYO-700M, 2022)"
DATACOMP_CODE = "Gadre et al., DataComp, NeurIPS 2023 Datasets and Benchmarks; the 'basic filtering' " \
                "baseline as run by mlfoundations/datacomp baselines/utils.py (load_uids_with_basic_filter_helper)"
LAION_PAPER = "Schuhmann et al., LAION-5B, NeurIPS 2022 Datasets and Benchmarks, section 3 (and LAION-400M, " \
              "arXiv 2111.02114)"


@dataclass(frozen=True)
class Setting:
    dest: str  # the curate config field (an option's dest)
    value: object
    why: str  # the source's words, or why this value expresses them exactly


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    source: str
    settings: tuple[Setting, ...]
    next_steps: tuple[str, ...] = ()  # commands to run after curate ({output} is the curate output)
    not_covered: tuple[str, ...] = ()  # what the recipe does that this preset does not

    def values(self) -> dict[str, object]:
        return {s.dest: s.value for s in self.settings}


def _without_align_frequency_rules(recipe: str, shared_text: bool = True) -> tuple[Setting, ...]:
    """The ALIGN rules a peer's recipe does not have, turned off (``shared_text``: its images-per-text rule too)."""
    return (Setting("boilerplate", False, f"not in {recipe}"),
            Setting("vocab_size", RARE_TOKEN_OFF, f"no rare-token rule in {recipe}: every n-gram is allowed"),
            *((Setting("max_images_per_text", 0, f"no text-frequency rule in {recipe}: off"),) if shared_text else ()),
            Setting("max_texts_per_image", 0, f"no texts-per-image rule in {recipe}: off"))


def _align() -> Preset:
    return Preset(
        "align", "ALIGN (the paper's rules; our defaults) on English alt-text", ALIGN_PAPER,
        (Setting("languages", ("en",), "'we follow the methodology of constructing Conceptual Captions dataset ... "
                                    "to get a version of raw English alt-text data'"),),
        not_covered=("the eval-set near-duplicate rule needs your eval images: --eval-index (aligndata "
                     "eval-index build)",),
    )


def _coyo() -> Preset:
    return Preset(
        "coyo", "COYO-700M's image- and text-level filters", COYO_README,
        (Setting("languages", ("en",), "'We collected only English text using cld3'"),
         Setting("min_chars", 6, "'Any text with a length of 5 or less has been dropped'"),
         Setting("min_words", 3, "'Text less than 3 words or more than 256 words ... were dropped'"),
         Setting("max_words", 256, "(same sentence)"),
         *_without_align_frequency_rules("COYO", shared_text=False),
         Setting("max_images_per_text", 10, "'All texts appearing more than 10 times have been dropped' (we "
                                            "count distinct image URLs a text appears with)"),
         Setting("min_image_bytes", 5_000, "'Less than 5KB image size are dropped' (5 KB read as 5,000 bytes)"),
         Setting("min_side", 199, "'Images with min(width, height) < 200 are dropped': keep >= 200"),
         Setting("max_aspect_ratio", ASPECT_AT_MOST_3, "'Images with an aspect ratio greater than 3.0 are "
                                                       "dropped': keep <= 3.0"),
         Setting("nsfw", "keywords", "'We dropped data containing NSFW words' (image models: see below)")),
        next_steps=("aligndata dedup {output}    # COYO: 'Based on (image_phash, text), duplicated samples "
                    "have been dropped'",
                    "aligndata subset {output} --output {output}_dedup --drop-duplicates"),
        not_covered=("'Text that does not have a noun form has been dropped' (no part-of-speech rule here)",
                     "NSFW image scores of OpenNSFW2 / GantMan > 0.5: use --nsfw keywords,nudenet (optional "
                     "extra) or a plugin",
                     "pHash duplicates of ImageNet, Flickr30K, MS-COCO, CC-3M, CC-12M: --eval-index built from "
                     "those images"),
    )


def _datacomp_basic() -> Preset:
    return Preset(
        "datacomp-basic", "DataComp's 'basic filtering' baseline", DATACOMP_CODE,
        (Setting("languages", ("en",), "english_mask = fasttext_lang_pred == 'en' (fastText lid.176)"),
         Setting("min_words", 3, "caption_num_words > 2 (words split on whitespace; ours are word tokens)"),
         Setting("min_chars", 6, "caption_num_chars > 5"),
         Setting("max_words", MAX_WORDS_OFF, "no upper length bound in the baseline: off"),
         *_without_align_frequency_rules("the baseline"),
         Setting("min_side", 199, "min(original_width, original_height) >= 200"),
         Setting("max_aspect_ratio", ASPECT_AT_MOST_3, "max/min side <= 3.0")),
        next_steps=("# DataComp's strongest simple baseline adds the top 30% by CLIP ViT-L/14 score:",
                    "aligndata score {output} --model open_clip:ViT-L-14:openai",
                    "aligndata subset {output} --output {output}_top30 --top-fraction 0.3"),
        not_covered=("DataComp's pools were built with NSFW removal and eval-set deduplication before any "
                     "baseline ran: keep --nsfw (keywords by default) and pass --eval-index",),
    )


def _laion() -> Preset:
    return Preset(
        "laion", "LAION-2B-en's rules (LAION-5B's English part)", LAION_PAPER,
        (Setting("languages", ("en",), "the English subset (LAION-2B-en); LAION-5B detected the language with CLD3"),
         Setting("min_chars", 5, "alt-texts shorter than 5 characters were dropped"),
         Setting("min_words", 0, "no word-count rule: off"),
         Setting("max_words", MAX_WORDS_OFF, "no word-count rule: off"),
         *_without_align_frequency_rules("LAION"),
         Setting("min_image_bytes", 5_000, "images smaller than 5 KB were dropped (read as 5,000 bytes)"),
         Setting("min_side", 0, "no image-size rule in LAION: off"),
         Setting("max_aspect_ratio", ASPECT_OFF, "no aspect-ratio rule in LAION: off")),
        next_steps=("# LAION kept pairs whose CLIP ViT-B/32 image-text cosine similarity is >= 0.28 (0.3 for "
                    "LAION-400M):",
                    "aligndata score {output} --model open_clip:ViT-B-32:openai",
                    "aligndata subset {output} --output {output}_clip028 --min-score 0.28"),
        not_covered=("duplicates by URL + alt-text: always on here (duplicate_pair)",
                     "LAION tagged NSFW images (punsafe) rather than dropping them; our --nsfw keywords default "
                     "drops what the keyword list flags: pass --nsfw off to keep them"),
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (_align(), _coyo(), _datacomp_basic(), _laion())}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == ASPECT_AT_MOST_3:
        return "3.0 inclusive"
    if value in (RARE_TOKEN_OFF, MAX_WORDS_OFF, ASPECT_OFF):
        return "off"
    if value == 0:
        return "0 = off"
    return str(value)


def next_steps(preset: Preset, output: str) -> list[str]:
    return [step.format(output=output) for step in preset.next_steps]


def describe(preset: Preset, flags: dict[str, str], defaults: dict[str, object]) -> str:
    """`aligndata rules --preset NAME`: every setting (flag, value, default, source), then what comes next."""
    lines = [f"preset {preset.name}: {preset.title}", f"source: {preset.source}", ""]
    for s in preset.settings:
        default = defaults.get(s.dest)
        same = " (the default)" if default == s.value else f" (default {_shown(default)})"
        lines.append(f"  {flags.get(s.dest, s.dest):24s} {_shown(s.value)}{same}")
        lines.append(f"      {s.why}")
    if preset.next_steps:
        lines += ["", "then run (OUT: the curate output):"] + [f"  {step}" for step in next_steps(preset, "OUT")]
    if preset.not_covered:
        lines += ["", "not done by this preset:"] + [f"  - {item}" for item in preset.not_covered]
    lines.append("\nOptions given on the command line override the preset's.")
    return "\n".join(lines) + "\n"

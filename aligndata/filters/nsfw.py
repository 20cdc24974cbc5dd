"""NSFW filtering: ALIGN removed pornographic images. Modes, given as ``--nsfw MODE[,MODE...]``:

* ``off`` — nothing is checked.
* ``keywords`` (the default; needs nothing extra) — a short, documented list of words and phrases that almost
  only occur on pornographic content (`KEYWORDS`, `PHRASES`), matched as whole words on the caption's tokens
  and on the image URL's tokens (lowercased; split on anything that is not a letter or digit, so
  ``/porn-videos/`` and ``pornhub.com`` match but ``scorpion`` does not). Deliberately conservative: words
  with common innocent uses are left out ("nude" is a fashion colour, "naked" a cake and a motorbike, "sexy"
  and "bikini" sell dresses and swimwear, "tits" are birds, "cock" a rooster, "xxx" a size and a URL
  placeholder — so "xxx" counts in captions only; "orgy" names a Vargas Llosa book). Measured on the real
  captions we ship (tests/test_nsfw.py): 18 of 10,000 LAION alt-texts flagged (0.18%), all from adult sites by
  inspection but one anime-sticker listing tagged "hentai"; 0 of 15,833 CC3M validation captions. Text catches
  what is labelled: pornographic captions without a listed word ("Gagged sub toyed ...") pass, as does any
  unlabelled image — use an image mode for those.
* ``nudenet`` — scores the image with NudeNet's detector (optional: ``pip install 'aligndata[nsfw]'``; the
  nudenet 3.4.2 wheel ships its ONNX model ``320n.onnx``, 12 MB, so it runs offline; its licence file is
  AGPL-3.0 although its metadata says MIT). The score is the highest confidence among exposed genitalia,
  breasts, buttocks and anus detections; flagged when score >= threshold.
* ``module:function`` — a plugin: ``function(image: PIL.Image.Image) -> float`` (higher = more NSFW), imported
  from an installed module; flagged when score >= threshold.

Several modes may be combined with commas (``keywords,nudenet``): the cheap text check runs first.
"""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from aligndata.filters.text import normalize_text, tokenize

DEFAULT_MODE = "keywords"
DEFAULT_THRESHOLD = 0.5

# Words that, as whole words, almost only label pornographic content. Matched in captions and URLs.
KEYWORDS = frozenset({
    # the word itself and its usual compounds
    "porn", "porno", "pornographic", "pornography", "pornstar", "pornstars", "nsfw", "hentai",
    # explicit acts and genres
    "blowjob", "blowjobs", "handjob", "handjobs", "cumshot", "cumshots", "creampie", "gangbang", "bukkake",
    "deepthroat", "cunnilingus", "fellatio", "masturbation", "masturbating", "upskirt", "milf",
    "milfs", "bdsm", "dildo", "dildos", "camgirl", "camgirls",
    # tube sites (in URLs: host names and paths)
    "pornhub", "xvideos", "xhamster", "xnxx", "redtube", "youporn", "brazzers",
})
# Tokens that are pornographic in a caption but innocent in URLs (size codes, placeholders).
CAPTION_ONLY_KEYWORDS = frozenset({"xxx"})
# Two-word phrases whose words are innocent alone ("sex education", "big cat", "toy").
PHRASES = frozenset({
    "sex tape", "sex video", "sex videos", "sex movie", "sex scene", "sex toy", "sex toys", "anal sex",
    "oral sex", "hardcore sex", "big tits", "big boobs",
})

_URL_TOKEN_RE = re.compile(r"[a-z0-9]+")


class NsfwError(Exception):
    """A bad ``--nsfw`` setting, a missing optional extra, or a plugin that failed (message names which)."""


@dataclass(frozen=True)
class NsfwHit:
    """Why an image was flagged: ``detail`` goes to the rejected ledger (score or matched word)."""

    score: float
    detail: str


def _find_keyword(tokens: list[str], words: frozenset[str]) -> str | None:
    for token in tokens:
        if token in words:
            return token
    for first, second in zip(tokens, tokens[1:]):
        phrase = f"{first} {second}"
        if phrase in PHRASES:
            return phrase
    return None


def caption_keyword(caption: str) -> str | None:
    """The first listed word or phrase in the caption's word tokens, or None."""
    return _find_keyword(tokenize(normalize_text(caption)), KEYWORDS | CAPTION_ONLY_KEYWORDS)


def url_keyword(url: str) -> str | None:
    """The first listed word or phrase among the URL's alphanumeric runs (host, path and query), or None."""
    return _find_keyword(_URL_TOKEN_RE.findall(url.lower()), KEYWORDS)


class KeywordCheck:
    """The ``keywords`` mode: caption first, then URL."""

    needs_image = False
    name = "keywords"

    def check(self, image: Image.Image | None, caption: str, url: str, threshold: float) -> NsfwHit | None:
        word = caption_keyword(caption or "")
        if word is not None:
            return NsfwHit(1.0, f"keyword:{word} (caption)")
        word = url_keyword(url or "")
        if word is not None:
            return NsfwHit(1.0, f"keyword:{word} (url)")
        return None


class _ImageScoreCheck:
    """An image scorer (a callable PIL image -> float), flagged at score >= threshold."""

    needs_image = True
    name = "image"

    def _score(self, image: Image.Image) -> float:
        raise NotImplementedError

    def check(self, image: Image.Image | None, caption: str, url: str, threshold: float) -> NsfwHit | None:
        if image is None:
            raise NsfwError(f"--nsfw {self.name} scores images but no image was given")
        try:
            score = float(self._score(image))
        except NsfwError:
            raise
        except Exception as err:
            raise NsfwError(f"--nsfw {self.name}: scoring failed: {type(err).__name__}: {err}") from err
        if not math.isfinite(score):
            raise NsfwError(f"--nsfw {self.name}: returned a non-finite score {score!r}")
        return NsfwHit(score, f"{self.name}:{score:.3f}") if score >= threshold else None


# NudeNet's classes that indicate nudity (the covered/face/feet/belly/armpit classes do not).
NUDENET_CLASSES = frozenset({
    "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
})
_NUDENET_MISSING = (
    "--nsfw nudenet needs the optional NudeNet extra: pip install 'aligndata[nsfw]' "
    "(nudenet, onnxruntime, opencv-python-headless; NudeNet is AGPL-3.0)"
)


def load_nudenet() -> Callable[[], object]:
    """The NudeDetector class, or NsfwError saying how to install it. Imported only when the mode is used."""
    try:
        from nudenet import NudeDetector
    except ImportError as err:
        raise NsfwError(f"{_NUDENET_MISSING} ({err})") from err
    return NudeDetector


class NudeNetCheck(_ImageScoreCheck):
    """The ``nudenet`` mode. The detector (an onnxruntime session, thread-safe) is created on first use."""

    name = "nudenet"

    def __init__(self) -> None:
        load_nudenet()  # fail at option time, not on the first image
        self._detector = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._detector = None
        self._lock = threading.Lock()

    def _score(self, image: Image.Image) -> float:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = load_nudenet()()
        import numpy as np

        # NudeDetector.detect takes what cv2.imread returns: a BGR uint8 array.
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        detections = self._detector.detect(bgr)
        return max((d["score"] for d in detections if d.get("class") in NUDENET_CLASSES), default=0.0)


class PluginCheck(_ImageScoreCheck):
    """The ``module:function`` mode: ``function(image) -> float``, imported again after unpickling."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.name = spec
        self._function = load_plugin(spec)

    def __getstate__(self):
        return {"spec": self.spec}

    def __setstate__(self, state):
        self.spec = self.name = state["spec"]
        self._function = None

    def _score(self, image: Image.Image) -> float:
        if self._function is None:
            self._function = load_plugin(self.spec)
        return self._function(image)


def load_plugin(spec: str) -> Callable[[Image.Image], float]:
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise NsfwError(f"--nsfw plugin must look like module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise NsfwError(f"--nsfw {spec}: cannot import module {module_name!r}: {err}") from err
    function = module
    for part in function_name.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise NsfwError(f"--nsfw {spec}: module {module_name!r} has no attribute {function_name!r}")
    if not callable(function):
        raise NsfwError(f"--nsfw {spec}: {function_name!r} is not callable")
    return function


def parse_modes(text: str) -> list[str]:
    """``off`` -> []; ``keywords,nudenet`` -> ["keywords", "nudenet"]. Unknown names raise NsfwError."""
    modes = [m.strip() for m in (text or "").split(",") if m.strip()]
    if not modes:
        raise NsfwError("--nsfw needs a mode: off, keywords, nudenet or module:function")
    if "off" in modes:
        if len(modes) > 1:
            raise NsfwError(f"--nsfw off cannot be combined with other modes, got {text!r}")
        return []
    for mode in modes:
        if mode not in ("keywords", "nudenet") and ":" not in mode:
            raise NsfwError(f"unknown --nsfw mode {mode!r}; expected off, keywords, nudenet or module:function")
    if len(set(modes)) != len(modes):
        raise NsfwError(f"--nsfw lists a mode twice: {text!r}")
    return modes


class NsfwFilter:
    """The configured checks, in order (text before images). Picklable; heavy state is re-created lazily."""

    def __init__(self, mode: str = DEFAULT_MODE, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not math.isfinite(threshold):
            raise NsfwError(f"--nsfw-threshold must be a finite number, got {threshold!r}")
        self.mode = mode
        self.threshold = threshold
        checks = []
        for name in parse_modes(mode):
            if name == "keywords":
                checks.append(KeywordCheck())
            elif name == "nudenet":
                checks.append(NudeNetCheck())
            else:
                checks.append(PluginCheck(name))
        self.checks = sorted(checks, key=lambda c: c.needs_image)  # stable: text checks first

    @property
    def enabled(self) -> bool:
        return bool(self.checks)

    @property
    def needs_image(self) -> bool:
        return any(c.needs_image for c in self.checks)

    def check(self, image: Image.Image | None, caption: str, url: str) -> NsfwHit | None:
        for check in self.checks:
            hit = check.check(image, caption, url, self.threshold)
            if hit is not None:
                return hit
        return None

    def check_text(self, caption: str, url: str) -> NsfwHit | None:
        """Only the checks that read text (caption and URL words): known before anything is downloaded."""
        for check in self.checks:
            if not check.needs_image:
                hit = check.check(None, caption, url, self.threshold)
                if hit is not None:
                    return hit
        return None

    def check_image(self, image: Image.Image) -> NsfwHit | None:
        """Only the checks that score the image."""
        for check in self.checks:
            if check.needs_image:
                hit = check.check(image, "", "", self.threshold)
                if hit is not None:
                    return hit
        return None

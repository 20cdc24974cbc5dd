"""The per-image content checks that run after ALIGN's size rules: eval-set near-duplicates, then NSFW.

One object, built once from the options (``ImageChecks.from_options``), pickled into the fetch DoFn and
called from its threads. It pickles as its options only: the eval index is re-read from its path (local or any
Beam filesystem) on the first check in each worker, so a 200k-image index never travels in the pipeline graph.
``from_options`` loads everything once on the launching machine, so a bad path, a bad threshold or a missing
NSFW extra fails before the pipeline starts, with a message naming the option.
"""

from __future__ import annotations

import threading

from PIL import Image

from aligndata.filters import reasons
from aligndata.filters.dedup import DEFAULT_EVAL_HAMMING, EvalHashes, HashSpec
from aligndata.filters.nsfw import DEFAULT_MODE, DEFAULT_THRESHOLD, NsfwError, NsfwFilter
from aligndata.images.eval_index import EvalIndexError, load_index
from aligndata.io.inputs import InputError

# The pipeline's own hash (filters.image.perceptual_hash, 64-bit pHash): its hex can be used as is.
PIPELINE_HASH = HashSpec("phash", 8)


class ImageChecksError(InputError):
    """A bad eval-index or NSFW option (the CLI shows the message without a traceback)."""


class ImageChecks:
    """``check_text(caption, url)`` before the download, ``check_image(image, phash_hex)`` after it: each gives
    ``(reason, detail)`` or None (keep). The fetch stage applies an image's verdict before its rows' text
    verdicts, so an eval-set duplicate outranks NSFW words, as the reason order says."""

    def __init__(self, eval_index_path: str | None = None, eval_hamming: int = DEFAULT_EVAL_HAMMING,
                 nsfw_mode: str = DEFAULT_MODE, nsfw_threshold: float = DEFAULT_THRESHOLD) -> None:
        self.eval_index_path = eval_index_path
        self.eval_hamming = eval_hamming
        try:
            self.nsfw = NsfwFilter(nsfw_mode, nsfw_threshold)
        except NsfwError as err:
            raise ImageChecksError(str(err)) from err
        self._eval: EvalHashes | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, eval_index_path: str | None, eval_hamming: int | None = None,
                     nsfw_mode: str = DEFAULT_MODE, nsfw_threshold: float = DEFAULT_THRESHOLD) -> "ImageChecks":
        """Validate the options now (loads the index once) and return a cheap-to-pickle checker."""
        if eval_hamming is None:
            eval_hamming = DEFAULT_EVAL_HAMMING
        if eval_hamming < 0:
            raise ImageChecksError(f"--eval-hamming must be >= 0, got {eval_hamming}")
        checks = cls(eval_index_path, eval_hamming, nsfw_mode, nsfw_threshold)
        if eval_index_path:
            checks.setup()
        return checks

    # Pickled as options only; the index is loaded again where the checks run.
    def __getstate__(self):
        return {"eval_index_path": self.eval_index_path, "eval_hamming": self.eval_hamming, "nsfw": self.nsfw}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._eval = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.eval_index_path) or self.nsfw.enabled

    @property
    def checks_images(self) -> bool:
        """Whether a downloaded image has checks of its own (keywords alone judge only text)."""
        return bool(self.eval_index_path) or self.nsfw.needs_image

    def check_decoded(self, decoded, phash_hex: str | None) -> tuple[str, str] | None:
        """``check_image`` on a decoded image (images.fast_decode.DecodedPixels): its Pillow copy (1.2 MB at
        640x480, ~0.3 ms) is made only when a check reads the pixels; an index of the pipeline's own hash needs
        only ``phash_hex``."""
        index = self.eval_hashes if self.eval_index_path else None
        needs_pixels = self.nsfw.needs_image or (index is not None and _hash_needs_pixels(index.spec, phash_hex))
        return self.check_image(decoded.image if needs_pixels else None, phash_hex)

    def setup(self) -> None:
        """Load the eval index and build its tables (call from DoFn.setup; otherwise done on the first check)."""
        if not self.eval_index_path or self._eval is not None:
            return
        with self._lock:
            if self._eval is None:
                try:
                    index = load_index(self.eval_index_path, self.eval_hamming)
                except EvalIndexError as err:
                    raise ImageChecksError(str(err)) from err
                index.index.build()
                self._eval = index

    @property
    def eval_hashes(self) -> EvalHashes | None:
        self.setup()
        return self._eval

    def _query_hash(self, spec: HashSpec, image: Image.Image | None, phash_hex: str | None) -> int:
        if not _hash_needs_pixels(spec, phash_hex):
            return spec.parse_hex(phash_hex)
        if image is None:
            raise ImageChecksError(f"the eval index uses {spec.kind} size {spec.size}: the image is needed to hash it")
        return spec.hash_image(image)  # an index built with another hash kind or size: hash here

    def check_image(self, image: Image.Image | None, phash_hex: str | None) -> tuple[str, str] | None:
        """The image's own checks, once per downloaded image: eval-set duplicate, then NSFW image scores."""
        if self.eval_index_path:
            index = self.eval_hashes
            match = index.match(self._query_hash(index.spec, image, phash_hex))
            if match is not None:
                return reasons.EVAL_SET_DUPLICATE, match.detail()
        if self.nsfw.needs_image:
            hit = self.nsfw.check_image(image)
            if hit is not None:
                return reasons.NSFW, hit.detail
        return None

    def check_text(self, caption: str, url: str) -> tuple[str, str] | None:
        """NSFW words in a row's caption or URL (no download needed)."""
        hit = self.nsfw.check_text(caption, url) if self.nsfw.enabled else None
        return None if hit is None else (reasons.NSFW, hit.detail)


def _hash_needs_pixels(spec: HashSpec, phash_hex: str | None) -> bool:
    """Whether an eval index of ``spec`` must hash the image itself: the pipeline's own pHash, when the stage
    computed it, is the query as it is."""
    return not (spec == PIPELINE_HASH and phash_hex)

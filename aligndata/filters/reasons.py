"""Stable reason codes for rejected rows, in precedence order.

Every input row ends in a shard or in ``rejected.parquet`` with exactly one reason. When several rules apply
to a row, the first in ``REASONS`` is the one recorded.
"""

INVALID_ROW = "invalid_row"  # missing/unsupported URL, empty text, absurd field, broken encoding
DUPLICATE_PAIR = "duplicate_pair"  # same (url, normalized text) seen on an earlier input row
TEXT_TOO_SHORT = "text_too_short"
TEXT_TOO_LONG = "text_too_long"
TEXT_BOILERPLATE = "text_boilerplate"
TEXT_RARE_TOKEN = "text_rare_token"
TEXT_SHARED_BY_TOO_MANY_IMAGES = "text_shared_by_too_many_images"
IMAGE_TOO_MANY_TEXTS = "image_too_many_texts"
ROBOTS_DISALLOWED = "robots_disallowed"
BLOCKED_ADDRESS = "blocked_address"
DOWNLOAD_FAILED = "download_failed"
DECODE_FAILED = "decode_failed"
IMAGE_TOO_SMALL = "image_too_small"
ASPECT_RATIO_TOO_LARGE = "aspect_ratio_too_large"
EVAL_SET_DUPLICATE = "eval_set_duplicate"
NSFW = "nsfw"

REASONS = (
    INVALID_ROW,
    DUPLICATE_PAIR,
    TEXT_TOO_SHORT,
    TEXT_TOO_LONG,
    TEXT_BOILERPLATE,
    TEXT_RARE_TOKEN,
    TEXT_SHARED_BY_TOO_MANY_IMAGES,
    IMAGE_TOO_MANY_TEXTS,
    ROBOTS_DISALLOWED,
    BLOCKED_ADDRESS,
    DOWNLOAD_FAILED,
    DECODE_FAILED,
    IMAGE_TOO_SMALL,
    ASPECT_RATIO_TOO_LARGE,
    EVAL_SET_DUPLICATE,
    NSFW,
)

_RANK = {reason: i for i, reason in enumerate(REASONS)}


def first_reason(reasons):
    """The reason recorded for a row: the earliest in precedence order among those that apply (None if none)."""
    present = [r for r in reasons if r]
    return min(present, key=_RANK.__getitem__) if present else None

"""Stable reason codes for rejected rows, named for the code that returns them.

Every input row ends in a shard or in the rejected ledger with exactly one reason. The precedence order (when
several rules apply to a row, the first is recorded) is the rule registry's: ``registry.REASONS``. A new rule
needs no constant here: its registration holds its code.
"""

INVALID_ROW = "invalid_row"  # missing/unsupported URL, empty text, absurd field, broken encoding
DUPLICATE_PAIR = "duplicate_pair"  # same (url, normalized text) seen on an earlier input row
TEXT_TOO_SHORT = "text_too_short"
TEXT_TOO_LONG = "text_too_long"
TEXT_TOO_FEW_CHARACTERS = "text_too_few_characters"
TEXT_BOILERPLATE = "text_boilerplate"
TEXT_LANGUAGE = "text_language"  # not in --languages (off by default)
TEXT_RARE_TOKEN = "text_rare_token"
TEXT_SHARED_BY_TOO_MANY_IMAGES = "text_shared_by_too_many_images"
IMAGE_TOO_MANY_TEXTS = "image_too_many_texts"
ROBOTS_DISALLOWED = "robots_disallowed"
BLOCKED_ADDRESS = "blocked_address"
DOWNLOAD_FAILED = "download_failed"
IMAGE_FILE_TOO_SMALL = "image_file_too_small"
DECODE_FAILED = "decode_failed"
IMAGE_TOO_SMALL = "image_too_small"
ASPECT_RATIO_TOO_LARGE = "aspect_ratio_too_large"
EVAL_SET_DUPLICATE = "eval_set_duplicate"
NSFW = "nsfw"

"""The image chain on fetched bytes (decode, ALIGN size rules, hash, resize, encode) and the content checks
(eval-set near-duplicates, NSFW). Pure Python: no Beam."""

"""Train a BERT-style WordPiece vocabulary on the captions of a set of shards (ALIGN trained a 100k one).

Saved as a ``BertTokenizerFast`` built from the trained ``tokenizers`` object (``tokenizer_object=``): in
transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file and gives a near-empty vocabulary.
The directory loads offline with ``AutoTokenizer.from_pretrained(DIR)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from aligndata.models import tario
from aligndata.models.shardlist import resolve_shards

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: id 0 = AlignTextConfig.pad_token_id


def iter_captions(urls: Iterable[str], limit: int | None = None) -> Iterator[str]:
    n = 0
    for sample in tario.iter_shards(urls):
        text = tario.caption(sample)
        if text is None:
            continue
        yield text
        n += 1
        if limit is not None and n >= limit:
            return


def train_tokenizer(texts: Iterable[str], vocab_size: int = 100_000, min_frequency: int = 2,
                    lowercase: bool = True):
    """A ``BertTokenizerFast`` with a WordPiece vocabulary of at most ``vocab_size`` entries learned on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab size {vocab_size} is too small (need room for {len(SPECIAL_TOKENS)} special tokens)")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, show_progress=False)
    counted = _Counting(texts)
    tok.train_from_iterator(counted, trainer=trainer)
    if counted.n == 0:
        raise ValueError("no captions to train the tokenizer on (every sample lacks a .txt)")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    log.info("tokenizer: %d words of vocabulary from %d captions", tok.get_vocab_size(), counted.n)
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


class _Counting:
    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.n = 0

    def __iter__(self):
        for text in self.texts:
            self.n += 1
            yield text


def train_tokenizer_on_shards(data: str, output: str | None, vocab_size: int = 100_000, min_frequency: int = 2,
                              max_captions: int | None = None):
    """Train on the captions of SHARDS ``data``; save to ``output`` (when given) and return the tokenizer."""
    urls = resolve_shards(data)
    tokenizer = train_tokenizer(iter_captions(urls, max_captions), vocab_size=vocab_size,
                                min_frequency=min_frequency)
    if output:
        tokenizer.save_pretrained(output)
    return tokenizer


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)

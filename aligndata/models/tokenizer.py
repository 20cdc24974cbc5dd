"""Train a BERT-style WordPiece vocabulary on the captions of a set of shards (ALIGN trained a 100k one).

Saved as a ``BertTokenizerFast`` built from the trained ``tokenizers`` object (``tokenizer_object=``): in
transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file and gives a near-empty vocabulary.
The directory loads offline with ``AutoTokenizer.from_pretrained(DIR)``.

Training is deterministic: the same captions give the same vocabulary and ids in every process. tokenizers'
WordPiece trainer is not (huggingface/tokenizers#1794: the ``##x`` continuation pieces get ids in hash-map
order, and those ids break ties between merges of equal count, so even the set of learned pieces changes from
run to run). We hand it every ``##x`` piece up front, in sorted order, as a special token so none is created
lazily, then rebuild the model from the learned vocabulary with only the real special tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from aligndata.shards.reader import iter_shards
from aligndata.shards.spec import ShardSet

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: id 0 = AlignTextConfig.pad_token_id


def iter_captions(urls: Iterable[str], limit: int | None = None) -> Iterator[str]:
    n = 0
    for sample in iter_shards(urls, want=lambda ext: ext == "txt"):  # captions only: image bytes skipped unread
        text = sample.strict_text
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
    def fresh(model):
        tok = Tokenizer(model)
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok

    tok = fresh(models.WordPiece(unk_token="[UNK]"))
    if isinstance(texts, Iterator):  # a one-shot iterator: keep it for the second pass (re-iterables are read twice)
        texts = list(texts)
    continuations, n_texts = _continuation_pieces(tok, texts)
    if n_texts == 0:
        raise ValueError("no captions to train the tokenizer on (every sample lacks a .txt)")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size + len(continuations), min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS + continuations, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok = fresh(models.WordPiece(vocab=_compact(tok.get_vocab(), vocab_size), unk_token="[UNK]"))
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    log.info("tokenizer: %d words of vocabulary from %d captions", tok.get_vocab_size(), n_texts)
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def _continuation_pieces(tok, texts: Iterable[str]) -> tuple[list[str], int]:
    """``##c`` for every character that follows another inside a pre-tokenized word, sorted; and the text count."""
    chars: set[str] = set()
    n = 0
    for text in texts:
        n += 1
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return ["##" + c for c in sorted(chars)], n


class ShardCaptions:
    """The captions of shards, read again on every iteration (two passes, no list of every caption in memory)."""

    def __init__(self, urls: list[str], limit: int | None = None, extra=()) -> None:
        self.urls, self.limit, self.extra = urls, limit, list(extra)

    def __iter__(self) -> Iterator[str]:
        yield from iter_captions(self.urls, self.limit)
        yield from self.extra  # texts the captions lack (an image-label set's class prompts)


def _compact(vocab: dict[str, int], vocab_size: int) -> dict[str, int]:
    """The learned pieces renumbered 0..n-1 in the trainer's (now deterministic) id order, cut to ``vocab_size``:
    the ``##c`` pieces handed in up front count towards the size like any other, the last-learned merges give
    way first (greedy longest-match still covers every word: all single characters come before any merge)."""
    return {piece: i for i, piece in enumerate(sorted(vocab, key=vocab.__getitem__)[:vocab_size])}


def train_tokenizer_on_shards(shards: ShardSet, output: str | None, vocab_size: int = 100_000,
                              min_frequency: int = 2, max_captions: int | None = None, prompts: Iterable[str] = ()):
    """Train on the captions of ``shards`` and ``prompts`` (texts the captions lack: an image-label set's class
    prompts); save to ``output`` (when given) and return the tokenizer."""
    urls = shards.paths
    tokenizer = train_tokenizer(ShardCaptions(urls, max_captions, extra=prompts), vocab_size=vocab_size,
                                min_frequency=min_frequency)
    if output:
        tokenizer.save_pretrained(output)
    return tokenizer


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)

"""`SourceFormat.WORD_PIECES`: the source of models with a pretrained BERT-family encoder.

The words come from the project's own splitter (``core.pointer.split_words``), so pointers mean
the same words as for every other model kind; each word is read by the encoder's WordPiece
tokenizer on its own (``is_pretokenized``), and the encoder input is ``[CLS]`` + every word's
pieces + ``[SEP]``. A word is represented by the state of its first piece. A word the tokenizer
reads as nothing at all (a control character its normalizer removes) becomes ``[UNK]``, so every
word keeps a position and stays pointable.
"""

from __future__ import annotations

from mtop_edge.core.pointer import Word
from mtop_edge.errors import ModelError

SPECIALS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]")


class WordPieces:
    """Encodes words with a WordPiece ``tokenizers.Tokenizer``: (ids, first-piece position per word)."""

    def __init__(self, tokenizer) -> None:
        ids = {token: tokenizer.token_to_id(token) for token in SPECIALS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ModelError(f"the encoder's tokenizer lacks {', '.join(missing)} (not a BERT WordPiece vocabulary)")
        # sentence-transformers' files pad and cut every input to 128 pieces: lengths are ours to decide
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.cls_id, self.sep_id, self.unk_id, self.pad_id = (ids[token] for token in SPECIALS)

    def __call__(self, utterance: str, words: list[Word]) -> tuple[list[int], list[int]]:
        encoding = self.tokenizer.encode([w.text for w in words], is_pretokenized=True, add_special_tokens=False)
        pieces: list[list[int]] = [[] for _ in words]
        for piece, word in zip(encoding.ids, encoding.word_ids, strict=True):
            pieces[word].append(piece)
        ids, starts = [self.cls_id], []
        for word_pieces in pieces:
            starts.append(len(ids))
            ids.extend(word_pieces or (self.unk_id,))
        ids.append(self.sep_id)
        return ids, starts

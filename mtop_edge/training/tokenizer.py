"""The source tokenizer and the pointer spec of a training run, for each model kind."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from mtop_edge.core.pointer import split_words
from mtop_edge.core.source import SentencePieces, SourceEncoder, load_sentencepiece, marked_text
from mtop_edge.core.spec import SP_MODEL_FILE, TOKENIZER_FILE, PointerSpec, SourceFormat
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.data import Example
from mtop_edge.errors import MtopEdgeError
from mtop_edge.formats.tokenizer_json import load_tokenizer
from mtop_edge.formats.wordpiece import WordPieces
from mtop_edge.training.recipe import SCRATCH, Recipe

# target ids of encoder-pointer models: PAD (also the decoder start), EOS, then the symbols
TARGET_PAD, TARGET_EOS, FIRST_SYMBOL = 0, 1, 2


def train_sentencepiece(texts: Sequence[str], path: Path, vocab_size: int) -> None:
    """A unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())


def t5_tokenizer(recipe: Recipe, out: Path, examples: Sequence[Example]):
    """The Hugging Face tokenizer (for savers and peers) and the sentencepiece file behind it."""
    from transformers import AutoTokenizer, T5TokenizerFast

    sp_path = out / SP_MODEL_FILE
    if recipe.init == SCRATCH:
        if not sp_path.exists():
            texts = [marked_text(split_words(e.utterance)) if recipe.markers else e.utterance for e in examples]
            train_sentencepiece(texts, sp_path, recipe.sp_vocab_size)
        return T5TokenizerFast(vocab_file=str(sp_path), extra_ids=0), sp_path
    tokenizer = AutoTokenizer.from_pretrained(recipe.init)
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if not vocab_file or not Path(vocab_file).is_file():
        raise MtopEdgeError(f"{recipe.init}: the tokenizer has no sentencepiece model (spiece.model)")
    if not sp_path.exists():
        shutil.copyfile(vocab_file, sp_path)
    return tokenizer, sp_path


def t5_spec(recipe: Recipe, tokenizer, vocab: TargetVocab, max_target_tokens: int) -> PointerSpec:
    """Add the target symbols to the tokenizer and record their ids."""
    tokenizer.add_tokens(vocab.symbols)
    ids = tokenizer.convert_tokens_to_ids(vocab.symbols)
    return PointerSpec(
        vocab=vocab,
        symbol_ids=tuple(ids),
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
        unk_id=tokenizer.unk_token_id,
        decoder_start_id=tokenizer.pad_token_id,
        source_format=SourceFormat.MARKERS if recipe.markers else SourceFormat.PIECES,
        max_source_tokens=recipe.max_source_tokens,
        max_target_tokens=max_target_tokens,
    )


def t5_source(spec: PointerSpec, sp_path: Path) -> SourceEncoder:
    return SourceEncoder(spec, SentencePieces(load_sentencepiece(sp_path), spec))


def copy_encoder_tokenizer(encoder_dir: Path, out: Path) -> Path:
    """The encoder's ``tokenizer.json``, copied beside the checkpoint (what the runtime reads)."""
    target = out / TOKENIZER_FILE
    if not target.exists():
        shutil.copyfile(encoder_dir / TOKENIZER_FILE, target)
    return target


def encoder_pointer_spec(
    recipe: Recipe, tokenizer_path: Path, vocab: TargetVocab, max_target_tokens: int, max_positions: int
) -> PointerSpec:
    """Targets in their own small id space (PAD, EOS, then the symbols); the source in the
    encoder's WordPiece vocabulary (its [UNK] and [PAD])."""
    pieces = WordPieces(load_tokenizer(tokenizer_path))
    return PointerSpec(
        vocab=vocab,
        symbol_ids=tuple(range(FIRST_SYMBOL, FIRST_SYMBOL + len(vocab.symbols))),
        pad_id=TARGET_PAD,
        eos_id=TARGET_EOS,
        unk_id=pieces.unk_id,
        decoder_start_id=TARGET_PAD,
        source_format=SourceFormat.WORD_PIECES,
        max_source_tokens=min(recipe.max_source_tokens, max_positions),
        max_target_tokens=max_target_tokens,
        tokenizer=TOKENIZER_FILE,
        source_pad_id=pieces.pad_id,
    )


def encoder_pointer_source(spec: PointerSpec, tokenizer_path: Path) -> SourceEncoder:
    return SourceEncoder(spec, WordPieces(load_tokenizer(tokenizer_path)))

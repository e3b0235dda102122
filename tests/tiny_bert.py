"""A tiny BERT encoder directory, built locally the way a pretrained one is laid out (config.json,
model.safetensors, tokenizer.json): what the encoder-pointer kind reads, without a download."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build(out: Path, texts: Sequence[str], *, vocab_size: int = 400, seed: int = 0) -> Path:
    """A WordPiece tokenizer trained on ``texts`` (lower-cased, BERT's normalizer and pre-tokenizer)
    and a 2-layer, d 32 BertModel with random weights, saved into ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=32)  # as sentence-transformers' files do
    tokenizer.save(str(out / "tokenizer.json"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    return out

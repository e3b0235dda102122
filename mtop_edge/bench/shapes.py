"""An mT5-small-shaped checkpoint with random weights, to show behaviour at the reference size.

The real configuration (d_model 512, d_ff 1024, 8+8 layers, 6 heads of d_kv 64, gated GELU,
untied output layer, vocabulary 250,112), with a small sentencepiece model and the MTOP target
symbols as ids inside that vocabulary, saved like a `mtop-edge train` output so every engine can
load it. Outputs are meaningless: benchmarks force a fixed number of decoding steps on it.
"""

from __future__ import annotations

from pathlib import Path

MT5_SMALL = {
    "vocab_size": 250_112,
    "d_model": 512,
    "d_ff": 1024,
    "num_layers": 8,
    "num_decoder_layers": 8,
    "num_heads": 6,
    "d_kv": 64,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}


def build_reference_shape(out: Path, train_data: Path, *, seed: int = 0, shape: dict | None = None) -> Path:
    """Write the random mT5-small-shaped checkpoint into ``out`` (skipped if already there).

    ``shape`` replaces the configuration (tests use a tiny one).
    """
    if (out / "pointer.json").is_file():
        return out
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5TokenizerFast

    from mtop_edge.core.pointer import split_words
    from mtop_edge.core.spec import SP_MODEL_FILE, PointerSpec, SourceFormat
    from mtop_edge.core.vocab import TargetVocab
    from mtop_edge.data import read_examples
    from mtop_edge.training.tokenizer import train_sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    examples = read_examples(train_data)
    train_sentencepiece([e.utterance for e in examples], out / SP_MODEL_FILE, 2000)
    tokenizer = T5TokenizerFast(vocab_file=str(out / SP_MODEL_FILE), extra_ids=0)
    vocab = TargetVocab.from_examples(examples, min_pointers=64)
    tokenizer.add_tokens(vocab.symbols)
    longest = max(len(split_words(e.utterance)) for e in examples)
    spec = PointerSpec(
        vocab=vocab,
        symbol_ids=tuple(tokenizer.convert_tokens_to_ids(vocab.symbols)),
        source_format=SourceFormat.PIECES,
        max_target_tokens=2 * longest + 16,
    )
    torch.manual_seed(seed)
    config = MT5Config(**(shape or MT5_SMALL), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = MT5ForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    spec.save(out)
    return out

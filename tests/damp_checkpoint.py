"""A tiny checkpoint in the DAMP pointer format, built from scratch the way run_parsing.py builds
its data: re-spaced sources, <pt-N> targets, added tokens, an mT5-style sentencepiece."""

from __future__ import annotations

from pathlib import Path

from mtop_edge.core.forms import serialize
from mtop_edge.data import Example
from mtop_edge.formats.damp import pointer_target


def build(out: Path, examples: list[Example], *, steps: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """Train a tiny mT5 on ``examples`` in DAMP format into ``out``; returns the (source, target) pairs.

    A few dozen rows trained to memorization: the tests compare engines on them, so the outputs
    must be well-formed trees, which a tiny model only produces on what it has learnt by heart."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5TokenizerFast

    from mtop_edge.training.tokenizer import train_sentencepiece

    torch.manual_seed(seed)
    pairs = [pointer_target(e.utterance, serialize(e.tree)) for e in examples]
    out.mkdir(parents=True, exist_ok=True)
    # ' ]' must be a sentencepiece piece of its own, as in DAMP's targets
    train_sentencepiece([s for s, _ in pairs] + ["] ]"] * 50, out / "spiece.model", 300)
    tokenizer = T5TokenizerFast(vocab_file=str(out / "spiece.model"), extra_ids=0)
    added = sorted({t for _, target in pairs for t in target.split() if t.startswith(("[IN:", "[SL:", "<pt-"))})
    tokenizer.add_tokens(added)
    config = MT5Config(
        vocab_size=len(tokenizer), d_model=64, d_ff=128, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=32,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    model = MT5ForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for step in range(steps):
        batch = [pairs[(step * 16 + i) % len(pairs)] for i in range(16)]
        inputs = tokenizer([s for s, _ in batch], padding=True, return_tensors="pt")
        labels = tokenizer(text_target=[t for _, t in batch], padding=True, return_tensors="pt").input_ids
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.generation_config.max_length = 64
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return pairs

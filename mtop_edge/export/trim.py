"""Vocabulary trimming: the exported decoder keeps only the target vocabulary.

mT5-small's output layer is 512 x 250,112 (128M of its 300M parameters and most of each step's
work), yet pointer targets use a few hundred symbols. The decoder's input embedding and output
layer keep just those rows; exported id t stands for checkpoint id ``decoder_ids[t]``, with the
decoder start and EOS first so that generation settings stay meaningful. The encoder may keep
only the source pieces seen in training (``encoder_ids``), unseen pieces reading as <unk>.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from mtop_edge.core.spec import PointerSpec


def decoder_ids(spec: PointerSpec) -> list[int]:
    """Checkpoint ids the trimmed decoder keeps: decoder start, EOS, PAD, then the target symbols."""
    return spec.decoder_vocabulary()


def encoder_ids(spec: PointerSpec, seen: Iterable[int]) -> list[int]:
    """Checkpoint ids the trimmed encoder keeps: specials, pointer markers, and the pieces seen."""
    markers = spec.pointer_ids if spec.markers else ()
    return sorted({spec.pad_id, spec.eos_id, spec.unk_id, *markers, *seen})


@contextmanager
def trimmed(model, keep_decoder: Sequence[int] | None, keep_encoder: Sequence[int] | None) -> Iterator:
    """Swap trimmed embeddings and output layer into a T5-family model, restoring it on exit.

    The model is modified in place (no copy of a 300M-parameter model) and put back as it was,
    so nothing is left changed by it (optimum's exporter patches the model too: the parity check
    loads a fresh copy). ``config.vocab_size`` becomes
    the smallest kept vocabulary, which keeps the exporter's dummy ids valid for both stacks.
    """
    import torch

    config = model.config
    saved = {
        "decoder_embed": model.decoder.embed_tokens,
        "encoder_embed": model.encoder.embed_tokens,
        "lm_head": model.lm_head,
        "vocab_size": config.vocab_size,
        "tie": config.tie_word_embeddings,
    }
    try:
        with torch.no_grad():
            if keep_decoder is not None:
                index = torch.tensor(list(keep_decoder), dtype=torch.long)
                embed = torch.nn.Embedding(len(index), config.d_model)
                embed.weight.copy_(saved["decoder_embed"].weight[index])
                head = torch.nn.Linear(config.d_model, len(index), bias=False)
                weight = saved["lm_head"].weight[index]
                if config.tie_word_embeddings:  # T5 scales tied outputs by d_model**-0.5: fold it in
                    weight = weight * config.d_model**-0.5
                head.weight.copy_(weight)
                model.decoder.embed_tokens = embed
                model.lm_head = head
                config.tie_word_embeddings = False
            if keep_encoder is not None:
                index = torch.tensor(list(keep_encoder), dtype=torch.long)
                embed = torch.nn.Embedding(len(index), config.d_model)
                embed.weight.copy_(saved["encoder_embed"].weight[index])
                model.encoder.embed_tokens = embed
        sizes = [len(k) for k in (keep_decoder, keep_encoder) if k is not None]
        config.vocab_size = min([*sizes, saved["vocab_size"]])
        yield model
    finally:
        model.decoder.embed_tokens = saved["decoder_embed"]
        model.encoder.embed_tokens = saved["encoder_embed"]
        model.lm_head = saved["lm_head"]
        config.vocab_size = saved["vocab_size"]
        config.tie_word_embeddings = saved["tie"]

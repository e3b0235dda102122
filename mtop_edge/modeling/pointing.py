"""What every pointing model shares (training side; imports torch): the mask for absent words,
the loss that knows about it, and the slot tags of the auxiliary span loss."""

from __future__ import annotations

import torch

POINTER_MASK = 1e4  # subtracted from the scores of words the utterance does not have


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy, label-smoothed over the columns a row can emit: masked pointers of absent
    words get no share (the Trainer's smoother would give them one, and report a loss near 1e4 x
    that share)."""
    logp = logits.float().log_softmax(-1).flatten(0, 1)
    labels = labels.flatten()
    kept = labels != -100
    logp, labels = logp[kept], labels[kept]
    nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    if not smoothing:
        return nll.mean()
    open_columns = logp > -POINTER_MASK / 2
    uniform = -(logp * open_columns).sum(-1) / open_columns.sum(-1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def word_tags(labels: torch.Tensor, bias: torch.Tensor, config) -> torch.Tensor:
    """Per row and word ([B, P]): 1 + the index of the innermost slot label covering the word in
    the target, 0 for a word no slot covers, -100 for absent words (``bias`` not 0).

    ``config`` carries ``span_slot_ids``, ``span_intent_ids``, ``span_close_id``, ``pointer_start``
    and ``num_pointers`` (target ids)."""
    start, count = config.pointer_start, config.num_pointers
    slot_class = {label: k + 1 for k, label in enumerate(config.span_slot_ids)}
    intents, close = set(config.span_intent_ids), config.span_close_id
    rows = torch.where(bias == 0, 0, -100).long().tolist()
    for row, target in zip(rows, labels.tolist(), strict=True):
        open_labels: list[int] = []  # slot classes, 0 for an intent
        for token in target:
            if token in slot_class:
                open_labels.append(slot_class[token])
            elif token in intents:
                open_labels.append(0)
            elif token == close and open_labels:
                open_labels.pop()
            elif start <= token < start + count and row[token - start] != -100:
                row[token - start] = next((c for c in reversed(open_labels) if c), 0)
    return torch.tensor(rows, device=labels.device)


def span_loss(scores: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor, config) -> torch.Tensor:
    """The auxiliary loss: each word's tag scores ([B, P, 1 + slots]) against `word_tags`."""
    tags = word_tags(labels, bias, config)
    return torch.nn.functional.cross_entropy(scores.float().flatten(0, 1), tags.flatten(), ignore_index=-100)

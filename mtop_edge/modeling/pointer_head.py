"""A T5 parser that points by content: the pointer head (training side; imports torch).

With the ``@ptrN`` vocabulary tokens, a model trained from scratch must learn a separate "which
index is this word" mapping per N. The pointer head scores every source word instead: the
decoder state's query against the encoder state of the word's marker (``@ptrN`` precedes word N
in the source, see ``PointerSpec.markers``), in the same softmax as the structural symbols
("Don't Parse, Generate!", Rongali et al. 2020). The pointed word's marker state is fed back as
the next decoder input.

Optionally (``config.span_loss`` > 0, training only) an auxiliary loss tags each source word's
marker state with the slot that covers it in the target (or none), so the encoder learns slot
extents directly; its small head is dropped at export.

The logits keep the vocabulary layout: column ``pointer_start + N`` holds word N's score, and
columns of absent words hold ``-POINTER_MASK``. So loss, generation, grammar constraints and
trimming treat both kinds of model alike; the exporter rebuilds the same computation in the
graphs (``export/pointer_head.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import MT5Config, MT5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

from mtop_edge.modeling.pointing import POINTER_MASK, masked_loss, span_loss


def pointer_memory(input_ids: torch.Tensor, hidden: torch.Tensor, start: int, count: int):
    """Per pointer N: the encoder state at marker N ([B, P, d]) and 0 / -POINTER_MASK where absent ([B, P])."""
    markers = torch.arange(start, start + count, device=input_ids.device)
    onehot = (input_ids.unsqueeze(-1) == markers).to(hidden.dtype)  # [B, S, P]
    memory = onehot.transpose(1, 2) @ hidden
    bias = (onehot.sum(1) - 1.0) * POINTER_MASK
    return memory, bias


def absent_pointer_bias(input_ids: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """0 / -POINTER_MASK per pointer ([B, P]): whether the row has a word there (its marker)."""
    markers = torch.arange(start, start + count, device=input_ids.device)
    return ((input_ids.unsqueeze(-1) == markers).any(1).float() - 1.0) * POINTER_MASK


def feed_back(ids: torch.Tensor, embeddings: torch.Tensor, memory: torch.Tensor, start: int) -> torch.Tensor:
    """Decoder inputs: token embeddings, with each pointer replaced by its word's marker state."""
    count = memory.shape[1]
    is_pointer = ids >= start
    index = (ids - start).clamp(min=0)
    fed = nn.functional.one_hot(index, count).to(memory.dtype) @ memory
    return torch.where(is_pointer.unsqueeze(-1), fed, embeddings)


class PointerHeadT5(MT5ForConditionalGeneration):
    """mT5 with content-based pointing. ``config.pointer_head`` marks such checkpoints;
    ``config.pointer_start`` is the id of ``@ptr0`` and ``config.num_pointers`` how many follow."""

    def __init__(self, config: MT5Config) -> None:
        super().__init__(config)
        self.pointer_query = nn.Linear(config.d_model, config.d_model, bias=False)
        self.pointer_key = nn.Linear(config.d_model, config.d_model, bias=False)
        self.pointer_query.weight.data.normal_(0.0, config.initializer_factor * config.d_model**-0.5)
        self.pointer_key.weight.data.normal_(0.0, config.initializer_factor * config.d_model**-0.5)
        if getattr(config, "span_loss", 0.0) > 0:  # class 0: no slot; class k: the k-th slot label
            self.pointer_span_tags = nn.Linear(config.d_model, 1 + len(config.span_slot_ids))

    @property
    def pointer_span(self) -> tuple[int, int]:
        return self.config.pointer_start, self.config.num_pointers

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encoder states, pointer memory and pointer bias: what every decoder step needs."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (hidden, *pointer_memory(input_ids, hidden, *self.pointer_span))

    def pointer_projection(self) -> torch.Tensor:
        """The [d, d] matrix q' = W such that a word's score is (W s) . memory: query and key folded
        together (the key projection applies to memory, so it moves to the query side), scaled by d**-0.5."""
        return (self.pointer_key.weight.t() @ self.pointer_query.weight) * self.config.d_model**-0.5

    def step_logits(self, decoder_ids, hidden, attention_mask, memory, bias, cache=None):
        """Logits for every decoder position, in the checkpoint's vocabulary layout (with ``cache``:
        for the positions after the cached ones, and the updated cache as well)."""
        start = self.config.pointer_start
        embeddings = feed_back(decoder_ids, self.shared(decoder_ids), memory, start)
        out = self.decoder(
            inputs_embeds=embeddings,
            encoder_hidden_states=hidden,
            encoder_attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        logits = self.head(out.last_hidden_state, memory, bias)
        return logits if cache is None else (logits, out.past_key_values)

    def head(self, states, memory, bias) -> torch.Tensor:
        """Vocabulary logits with the pointer columns replaced by the words' scores."""
        start, count = self.pointer_span
        if self.config.tie_word_embeddings:
            states = states * self.config.d_model**-0.5
        vocabulary = self.lm_head(states)
        query = states @ self.pointer_projection().t()
        scores = query @ memory.transpose(1, 2) + bias.unsqueeze(1)
        return torch.cat([vocabulary[..., :start], scores, vocabulary[..., start + count :]], dim=-1)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, labels=None, **_) -> Seq2SeqLMOutput:
        if decoder_input_ids is None:
            decoder_input_ids = self._shift_right(labels)
        hidden, memory, bias = self.encode(input_ids, attention_mask)
        logits = self.step_logits(decoder_input_ids, hidden, attention_mask, memory, bias)
        loss = None if labels is None else self.loss(logits, labels)
        if loss is not None and hasattr(self, "pointer_span_tags"):
            loss = loss + self.config.span_loss * span_loss(self.pointer_span_tags(memory), labels, bias, self.config)
        return Seq2SeqLMOutput(loss=loss, logits=logits)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy label-smoothed by ``config.pointer_label_smoothing`` (see ``masked_loss``)."""
        return masked_loss(logits, labels, getattr(self.config, "pointer_label_smoothing", 0.0))

    @torch.inference_mode()
    def greedy(self, input_ids, attention_mask, *, max_new_tokens: int, suppress: torch.Tensor | None = None):
        """Greedy ids per row, decoder start first (like ``generate``); finished rows continue with PAD.

        With past key/values, as the exported decoders run.
        """
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        hidden, memory, bias = self.encode(input_ids, attention_mask)
        config = self.config
        ids = torch.full((input_ids.shape[0], 1), config.decoder_start_token_id, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for _ in range(max_new_tokens):
            logits, cache = self.step_logits(ids[:, -1:], hidden, attention_mask, memory, bias, cache)
            logits = logits[:, -1].float()
            if suppress is not None:
                logits[:, suppress] = -torch.inf
            chosen = logits.argmax(-1).masked_fill(done, config.pad_token_id)
            ids = torch.cat([ids, chosen.unsqueeze(1)], dim=1)
            done |= chosen == config.eos_token_id
            if done.all():
                break
        return ids

"""A pretrained BERT-family encoder with a small pointer decoder (training side; imports torch).

The encoder (e.g. MiniLM-L6, `transformers.BertModel`) reads ``[CLS]`` + every word's WordPiece
pieces + ``[SEP]``; a word is the state of its first piece (``word_index``, see
``formats/wordpiece.py``). The decoder is a small pre-norm transformer with learned positions and
cross-attention to every piece state. Each step scores the target labels (a linear layer) and every
source word (its query against the word's key) in one softmax, and a pointed word is fed back as
the projection of its state. The logits keep the target layout of the other kinds: column
``pointer_start + N`` holds word N's score, ``-POINTER_MASK`` where the row has no word N.

Everything a decoder step reads from the encoder is computed once per utterance (`encode`): the
cross-attention keys/values of every layer, the words' pointer keys and fed-back states, and the
absent-word bias; the export (``export/encoder_pointer.py``) keeps that split, so the runtime's one
loop runs it like the T5 kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import Seq2SeqLMOutput

from mtop_edge.modeling import ENCODER_POINTER_TYPE
from mtop_edge.modeling.pointing import POINTER_MASK, masked_loss, span_loss


class EncoderPointerConfig(PretrainedConfig):
    """``encoder_config``: the BERT encoder's config as a dict; the rest sizes the decoder. Target ids:
    0 pad and decoder start, 1 EOS, then labels and ``]`` up to ``pointer_start``, then the pointers."""

    model_type = ENCODER_POINTER_TYPE

    def __init__(
        self,
        encoder_config: dict | None = None,
        d_model: int = 384,
        d_ff: int = 1024,
        num_decoder_layers: int = 2,
        num_heads: int = 6,
        d_kv: int = 64,
        dropout_rate: float = 0.1,
        pointer_start: int = 3,
        num_pointers: int = 64,
        max_target_positions: int = 128,
        pointer_label_smoothing: float = 0.0,
        span_loss: float = 0.0,
        span_slot_ids: list[int] | None = None,
        span_intent_ids: list[int] | None = None,
        span_close_id: int = -1,
        pad_token_id: int = 0,
        eos_token_id: int = 1,
        decoder_start_token_id: int = 0,
        encoder_attention: str | None = None,
        **kwargs,
    ) -> None:
        """``encoder_attention``: the BERT attention implementation (None: transformers' default;
        ``eager`` for the ONNX export, whose fusions know that pattern)."""
        kwargs.setdefault("is_encoder_decoder", True)
        super().__init__(
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            **kwargs,
        )
        self.encoder_config = dict(encoder_config or {})
        self.d_model, self.d_ff, self.num_decoder_layers = d_model, d_ff, num_decoder_layers
        self.num_heads, self.d_kv, self.dropout_rate = num_heads, d_kv, dropout_rate
        self.pointer_start, self.num_pointers = pointer_start, num_pointers
        self.max_target_positions = max_target_positions
        self.pointer_label_smoothing, self.span_loss = pointer_label_smoothing, span_loss
        self.span_slot_ids, self.span_intent_ids = list(span_slot_ids or []), list(span_intent_ids or [])
        self.span_close_id = span_close_id
        self.encoder_attention = encoder_attention
        self.vocab_size = pointer_start + num_pointers

    @property
    def bert(self) -> BertConfig:
        return BertConfig(**self.encoder_config, attn_implementation=self.encoder_attention)


@dataclass
class Encoded:
    """What every decoder step reads, computed once per utterance."""

    cross: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, S, d_kv]
    memory_bias: torch.Tensor | None  # [B, 1, 1, S]: 0 on tokens, the dtype's minimum on padding
    pointer_keys: torch.Tensor  # [B, P, d]: each word's key, scaled by d**-0.5
    pointer_feed: torch.Tensor  # [B, P, d]: what a pointer to each word feeds back
    pointer_bias: torch.Tensor  # [B, P]: 0 for the row's words, -POINTER_MASK past them
    words: torch.Tensor  # [B, P, encoder hidden]: the words' first-piece states (the span loss reads them)


def memory_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, S]: 0 where the encoder has a token, the dtype's minimum on padding (cross-attention's bias)."""
    return ((1.0 - attention_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, heads * d_kv] -> [B, heads, T, d_kv]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _mix(query, keys, values, bias, heads: int, dropout: float) -> torch.Tensor:
    """Scaled dot-product attention of projected queries [B, T, D] over head-split keys/values -> [B, T, D]."""
    query = _heads(query, heads)
    mixed = functional.scaled_dot_product_attention(query, keys, values, attn_mask=bias, dropout_p=dropout)
    return mixed.transpose(1, 2).flatten(2)


class TorchAttention:
    """The attention arithmetic on projected inputs. The export swaps in onnxruntime's fused operator
    for the same numbers in one node (``export/decoder_attention.py``), so the layer is written once."""

    @staticmethod
    def cached(query, key, value, past, bias, heads: int, dropout: float):
        """Self-attention: the new steps' keys/values [B, T, D] joined to ``past`` (or None); returns the
        mixed values and the keys/values attended [B, heads, past + T, d_kv], the next step's past."""
        keys, values = _heads(key, heads), _heads(value, heads)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        return _mix(query, keys, values, bias, heads, dropout), (keys, values)

    @staticmethod
    def memory(query, keys, values, bias, heads: int, dropout: float) -> torch.Tensor:
        """Cross-attention over keys/values computed once per utterance [B, heads, S, d_kv]."""
        return _mix(query, keys, values, bias, heads, dropout)


class Attention(nn.Module):
    kernel = TorchAttention  # an instance attribute replaces it during the export

    def __init__(self, d_model: int, heads: int, d_kv: int, dropout: float) -> None:
        super().__init__()
        inner = heads * d_kv
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = (nn.Linear(d_model, inner) for _ in range(3))
        self.out = nn.Linear(inner, d_model)

    def _dropout(self) -> float:
        return self.dropout if self.training else 0.0

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _heads(self.key(x), self.heads), _heads(self.value(x), self.heads)

    def attend_cached(self, x: torch.Tensor, past, bias: torch.Tensor | None):
        """Self-attention of ``x`` after the ``past`` steps; returns the output and the new past."""
        mixed, present = self.kernel.cached(
            self.query(x), self.key(x), self.value(x), past, bias, self.heads, self._dropout()
        )
        return self.out(mixed), present

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None):
        """Attention of ``x`` over precomputed ``keys``/``values`` (the encoder's)."""
        return self.out(self.kernel.memory(self.query(x), keys, values, bias, self.heads, self._dropout()))


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention (cached keys/values), cross-attention, feed-forward."""

    def __init__(self, config: EncoderPointerConfig) -> None:
        super().__init__()
        d, dropout = config.d_model, config.dropout_rate
        self.self_norm, self.cross_norm, self.ff_norm = (nn.LayerNorm(d) for _ in range(3))
        self.self_attention = Attention(d, config.num_heads, config.d_kv, dropout)
        self.cross_attention = Attention(d, config.num_heads, config.d_kv, dropout)
        self.ff = nn.Sequential(nn.Linear(d, config.d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(config.d_ff, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, cross_keys, cross_values, memory_bias, self_bias, past=None):
        """``past``: this layer's (keys, values) of earlier steps; returns the output and the new past."""
        attended, present = self.self_attention.attend_cached(self.self_norm(x), past, self_bias)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.cross_attention.attend(self.cross_norm(x), cross_keys, cross_values, memory_bias))
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, present


class EncoderPointerModel(PreTrainedModel):
    """BERT-family encoder + pointer decoder; ``config.model_type`` marks such checkpoints."""

    config_class = EncoderPointerConfig
    base_model_prefix = "encoder_pointer"
    main_input_name = "input_ids"

    def __init__(self, config: EncoderPointerConfig) -> None:
        super().__init__(config)
        bert = config.bert
        width, d = bert.hidden_size, config.d_model
        self.encoder = BertModel(bert, add_pooling_layer=False)
        self.memory = nn.Identity() if width == d else nn.Linear(width, d)
        self.label_embedding = nn.Embedding(config.pointer_start, d)
        self.position_embedding = nn.Embedding(config.max_target_positions, d)
        self.pointer_feed = nn.Linear(width, d)
        self.pointer_key = nn.Linear(width, d, bias=False)
        self.pointer_query = nn.Linear(d, d, bias=False)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.final_norm = nn.LayerNorm(d)
        self.label_head = nn.Linear(d, config.pointer_start)
        self.dropout = nn.Dropout(config.dropout_rate)
        if config.span_loss > 0:  # class 0: no slot; class k: the k-th slot label
            self.span_tags = nn.Linear(width, 1 + len(config.span_slot_ids))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.bert.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor) -> Encoded:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        encoded = self.encoded(states, word_index)
        encoded.memory_bias = memory_bias(attention_mask, states.dtype)
        return encoded

    def encoded(self, states: torch.Tensor, word_index: torch.Tensor) -> Encoded:
        """What the decoder reads, from the encoder's states (the cross-attention bias comes from the mask)."""
        gather = word_index.clamp(min=0).unsqueeze(-1).expand(-1, -1, states.shape[-1])
        words = torch.gather(states, 1, gather)
        pointer_bias = ((word_index >= 0).to(states.dtype) - 1.0) * POINTER_MASK
        memory = self.memory(states)
        return Encoded(
            cross=[layer.cross_attention.keys_values(memory) for layer in self.layers],
            memory_bias=None,
            pointer_keys=self.pointer_key(words) * self.config.d_model**-0.5,
            pointer_feed=self.pointer_feed(words),
            pointer_bias=pointer_bias,
            words=words,
        )

    def embed(self, ids: torch.Tensor, pointer_feed: torch.Tensor, first_position: int | torch.Tensor = 0):
        """Decoder inputs: label embeddings, a pointer's word fed back, plus learned positions."""
        start = self.config.pointer_start
        is_pointer = ids >= start
        labels = self.label_embedding(ids.clamp(max=start - 1))
        index = (ids - start).clamp(min=0).unsqueeze(-1).expand(-1, -1, pointer_feed.shape[-1])
        fed = torch.gather(pointer_feed, 1, index)
        positions = torch.arange(ids.shape[1], device=ids.device) + first_position
        return self.dropout(torch.where(is_pointer.unsqueeze(-1), fed, labels) + self.position_embedding(positions))

    def decode(self, ids: torch.Tensor, encoded: Encoded, past: list | None = None):
        """Logits for ``ids`` (after the ``past`` steps, if any) and every layer's new past."""
        steps = ids.shape[1]
        done = 0 if past is None else past[0][0].shape[2]
        x = self.embed(ids, encoded.pointer_feed, done)
        self_bias = None
        if steps > 1:  # causal within the new steps; every past step is visible
            causal = torch.ones(steps, done + steps, dtype=torch.bool, device=ids.device).tril(done)
            self_bias = torch.zeros(causal.shape, dtype=x.dtype, device=ids.device).masked_fill(~causal, float("-inf"))
        presents = []
        for i, layer in enumerate(self.layers):
            keys, values = encoded.cross[i]
            x, present = layer(x, keys, values, encoded.memory_bias, self_bias, None if past is None else past[i])
            presents.append(present)
        return self.head(self.final_norm(x), encoded), presents

    def head(self, states: torch.Tensor, encoded: Encoded) -> torch.Tensor:
        """Label logits, then each word's score (absent words masked)."""
        scores = self.pointer_query(states) @ encoded.pointer_keys.transpose(1, 2) + encoded.pointer_bias.unsqueeze(1)
        return torch.cat([self.label_head(states), scores], dim=-1)

    def forward(
        self, input_ids=None, attention_mask=None, word_index=None, labels=None, decoder_input_ids=None, **_
    ) -> Seq2SeqLMOutput:
        if decoder_input_ids is None:
            decoder_input_ids = _shift_right(labels, self.config)
        encoded = self.encode(input_ids, attention_mask, word_index)
        logits, _ = self.decode(decoder_input_ids, encoded)
        loss = None
        if labels is not None:
            loss = masked_loss(logits, labels, self.config.pointer_label_smoothing)
            if hasattr(self, "span_tags"):
                loss = loss + self.config.span_loss * span_loss(
                    self.span_tags(encoded.words), labels, encoded.pointer_bias, self.config
                )
        return Seq2SeqLMOutput(loss=loss, logits=logits)

    @torch.inference_mode()
    def greedy(self, input_ids, attention_mask, word_index, *, max_new_tokens: int, suppress=None) -> torch.Tensor:
        """Greedy ids per row, decoder start first (like ``generate``); finished rows continue with PAD.

        With past keys/values, as the exported decoder runs."""
        config = self.config
        encoded = self.encode(input_ids, attention_mask, word_index)
        rows = input_ids.shape[0]
        ids = torch.full((rows, 1), config.decoder_start_token_id, device=input_ids.device)
        done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        past = None
        for _ in range(max_new_tokens):
            logits, past = self.decode(ids[:, -1:], encoded, past)
            logits = logits[:, -1].float()
            if suppress is not None:
                logits[:, suppress] = -torch.inf
            chosen = logits.argmax(-1).masked_fill(done, config.pad_token_id)
            ids = torch.cat([ids, chosen.unsqueeze(1)], dim=1)
            done |= chosen == config.eos_token_id
            if done.all():
                break
        return ids

    def optimizer_groups(self, learning_rate: float, encoder_rate: float, layer_decay: float, weight_decay: float):
        """AdamW parameter groups: the encoder at ``encoder_rate``, each layer below the top one
        ``layer_decay`` times the rate of the layer above (embeddings lowest), the decoder and heads at
        ``learning_rate``; no weight decay on biases and norms."""
        depth = self.config.bert.num_hidden_layers
        groups: dict[tuple[float, float], list] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            rate = learning_rate
            if name.startswith("encoder."):
                level = depth  # the embeddings
                if name.startswith("encoder.encoder.layer."):
                    level = depth - 1 - int(name.split(".")[3])
                rate = encoder_rate * layer_decay**level
            decay = 0.0 if parameter.ndim < 2 else weight_decay
            groups.setdefault((rate, decay), []).append(parameter)
        return [{"params": ps, "lr": rate, "weight_decay": decay} for (rate, decay), ps in groups.items()]


def _shift_right(labels: torch.Tensor, config: EncoderPointerConfig) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the decoder start, then the labels but the last (-100 read as PAD)."""
    start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == -100, config.pad_token_id)


def load_pretrained_encoder(model: EncoderPointerModel, directory: str) -> None:
    """Copy a pretrained ``BertModel``'s weights (a directory with config.json and weights) into ``model.encoder``.

    Raises:
        ValueError: the weights do not fit the encoder (a different architecture or size).
    """
    pretrained = BertModel.from_pretrained(directory, add_pooling_layer=False)
    missing, unexpected = model.encoder.load_state_dict(pretrained.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not fit the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )

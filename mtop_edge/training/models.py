"""The model a recipe trains: a T5 (plain, or with the pointer head) or an encoder-pointer model."""

from __future__ import annotations

from pathlib import Path

from mtop_edge.core.forms import CLOSE, INTENT_PREFIX, SLOT_PREFIX
from mtop_edge.core.spec import PointerSpec
from mtop_edge.errors import MtopEdgeError
from mtop_edge.training.recipe import SCRATCH, ModelKind, Pointing, Recipe

TARGET_MARGIN = 16  # decoding room beyond the longest training target


def span_fields(spec: PointerSpec) -> dict:
    """The target ids the span loss's tags are read from."""
    symbols = dict(zip(spec.symbols, spec.symbol_ids, strict=True))
    return {
        "span_slot_ids": [i for symbol, i in symbols.items() if symbol.startswith("[" + SLOT_PREFIX)],
        "span_intent_ids": [i for symbol, i in symbols.items() if symbol.startswith("[" + INTENT_PREFIX)],
        "span_close_id": symbols[CLOSE],
    }


def build_model(recipe: Recipe, vocab_size: int, spec: PointerSpec, encoder_dir: Path | None = None):
    """A new or continued model for the recipe, with its generation settings set from the spec."""
    if recipe.kind is ModelKind.ENCODER_POINTER:
        model = _encoder_pointer_model(recipe, spec, encoder_dir)
    elif recipe.init == SCRATCH:
        model = _t5_from_scratch(recipe, vocab_size, spec)
    elif recipe.pointing is Pointing.HEAD:
        model = _continued_pointer_model(recipe, spec, vocab_size)
    else:
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(recipe.init)
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        model.config.dropout_rate = recipe.dropout_rate
    generation = model.generation_config
    if generation is None:  # not a transformers generator (encoder-pointer decodes with its own `greedy`)
        return model
    generation.decoder_start_token_id = spec.decoder_start_id
    generation.eos_token_id = spec.eos_id
    generation.pad_token_id = spec.pad_id
    generation.max_length = spec.max_target_tokens + 1
    generation.num_beams = 1
    generation.do_sample = False
    return model


def _t5_from_scratch(recipe: Recipe, vocab_size: int, spec: PointerSpec):
    from transformers import MT5Config, MT5ForConditionalGeneration

    config = MT5Config(
        vocab_size=vocab_size,
        d_model=recipe.d_model,
        d_ff=recipe.d_ff,
        num_layers=recipe.num_layers,
        num_decoder_layers=recipe.num_decoder_layers,
        num_heads=recipe.num_heads,
        d_kv=recipe.d_kv,
        feed_forward_proj=recipe.feed_forward_proj,
        tie_word_embeddings=recipe.tie_word_embeddings,
        dropout_rate=recipe.dropout_rate,
        pad_token_id=spec.pad_id,
        eos_token_id=spec.eos_id,
        decoder_start_token_id=spec.decoder_start_id,
    )
    if recipe.pointing is not Pointing.HEAD:
        return MT5ForConditionalGeneration(config)
    from mtop_edge.modeling.pointer_head import PointerHeadT5

    pointers = spec.pointer_ids
    if list(pointers) != list(range(pointers[0], pointers[0] + len(pointers))):
        raise MtopEdgeError("pointing = head: the pointer tokens' ids are not consecutive")
    config.pointer_head = True
    config.pointer_label_smoothing = recipe.label_smoothing  # the model smooths its own loss (see its docstring)
    config.pointer_start = pointers[0]
    config.num_pointers = len(pointers)
    if recipe.span_loss > 0:
        config.span_loss = recipe.span_loss
        for key, value in span_fields(spec).items():
            setattr(config, key, value)
    return PointerHeadT5(config)


def _continued_pointer_model(recipe: Recipe, spec: PointerSpec, vocab_size: int):
    """A pointer-head checkpoint of this project, to train on (a warm restart with a new schedule).

    Raises:
        MtopEdgeError: ``init`` is not a pointer-head checkpoint, or does not fit this data's symbols.
    """
    from mtop_edge.modeling.pointer_head import PointerHeadT5
    from mtop_edge.modeling.torch_engine import is_pointer_head_checkpoint

    if not is_pointer_head_checkpoint(Path(recipe.init)):
        raise MtopEdgeError(
            f'pointing = "head" needs init = "scratch" or a pointer-head checkpoint of this project; {recipe.init} '
            "has no pointer head"
        )
    model = PointerHeadT5.from_pretrained(recipe.init, dropout_rate=recipe.dropout_rate)
    config = model.config
    pointers = spec.pointer_ids
    if (config.pointer_start, config.num_pointers) != (pointers[0], len(pointers)) or config.vocab_size < vocab_size:
        raise MtopEdgeError(f"{recipe.init}: its pointer tokens or vocabulary do not match this data's symbols")
    if recipe.span_loss > 0 and not hasattr(model, "pointer_span_tags"):
        raise MtopEdgeError(f"{recipe.init}: trained without the span loss, it has no span head to go on with")
    config.pointer_label_smoothing = recipe.label_smoothing
    config.span_loss = recipe.span_loss
    return model


def _encoder_pointer_model(recipe: Recipe, spec: PointerSpec, encoder_dir: Path | None):
    """The pretrained encoder and a new decoder (init = scratch), or a checkpoint of this kind to go on from."""
    from transformers import BertConfig

    from mtop_edge.modeling import ENCODER_POINTER_TYPE
    from mtop_edge.modeling.encoder_pointer import EncoderPointerConfig, EncoderPointerModel, load_pretrained_encoder
    from mtop_edge.modeling.torch_engine import checkpoint_model_type

    start = spec.pointer_ids[0]
    if recipe.init != SCRATCH:
        if checkpoint_model_type(Path(recipe.init)) != ENCODER_POINTER_TYPE:
            raise MtopEdgeError(f"{recipe.init}: not an encoder-pointer checkpoint of this project (config.json)")
        model = EncoderPointerModel.from_pretrained(recipe.init)
        if (model.config.pointer_start, model.config.num_pointers) != (start, len(spec.pointer_ids)):
            raise MtopEdgeError(f"{recipe.init}: its target symbols do not match this data's")
        model.config.pointer_label_smoothing = recipe.label_smoothing
        return model
    bert = BertConfig.from_pretrained(str(encoder_dir))
    config = EncoderPointerConfig(
        encoder_config={k: v for k, v in bert.to_dict().items() if not k.startswith("_")},
        d_model=recipe.d_model,
        d_ff=recipe.d_ff,
        num_decoder_layers=recipe.num_decoder_layers,
        num_heads=recipe.num_heads,
        d_kv=recipe.d_kv,
        dropout_rate=recipe.dropout_rate,
        pointer_start=start,
        num_pointers=len(spec.pointer_ids),
        max_target_positions=spec.max_target_tokens + 1,
        pointer_label_smoothing=recipe.label_smoothing,
        span_loss=recipe.span_loss,
        **(span_fields(spec) if recipe.span_loss > 0 else {}),
        pad_token_id=spec.pad_id,
        eos_token_id=spec.eos_id,
        decoder_start_token_id=spec.decoder_start_id,
    )
    model = EncoderPointerModel(config)
    load_pretrained_encoder(model, str(encoder_dir))
    return model

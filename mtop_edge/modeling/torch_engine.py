"""The PyTorch reference engine: a trained checkpoint decoded with transformers ``generate``.

It is what `evaluate --engine torch` runs and what the exporter's parity check compares against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtop_edge.core.forms import Intent
from mtop_edge.core.source import encoder_feed
from mtop_edge.core.spec import PointerSpec
from mtop_edge.errors import DeviceError, InputError, ModelError, require
from mtop_edge.formats import checkpoint_spec, load_source
from mtop_edge.metrics import Rejected
from mtop_edge.modeling import ENCODER_POINTER_TYPE


def load_checkpoint(model_dir: str | Path):
    """A trained parser from a checkpoint directory (any kind), with errors that name the broken file."""
    require("torch", "train")
    require("transformers", "train")
    from transformers import AutoModelForSeq2SeqLM

    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if model_dir.is_dir() and not config.is_file():
        raise ModelError(f"{config}: missing (not a Hugging Face checkpoint)")
    try:
        if checkpoint_model_type(model_dir) == ENCODER_POINTER_TYPE:
            from mtop_edge.modeling.encoder_pointer import EncoderPointerModel

            return EncoderPointerModel.from_pretrained(str(model_dir)).eval()
        if is_pointer_head_checkpoint(model_dir):
            from mtop_edge.modeling.pointer_head import PointerHeadT5

            return PointerHeadT5.from_pretrained(str(model_dir)).eval()
        return AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
    except Exception as exc:  # safetensors, torch and transformers each raise their own types for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_dir}: cannot load the checkpoint ({first_line})") from None


def _config(model_dir: Path) -> dict:
    import json

    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # from_pretrained reports unreadable configs with its own message
    return config if isinstance(config, dict) else {}


def checkpoint_model_type(model_dir: Path) -> str | None:
    """``model_type`` in a checkpoint's config.json."""
    return _config(model_dir).get("model_type")


def is_pointer_head_checkpoint(model_dir: Path) -> bool:
    """Whether a checkpoint directory holds a T5 pointer-head model (``pointer_head`` in its config)."""
    return bool(_config(model_dir).get("pointer_head"))


def greedy_generate(
    model,
    feed: dict[str, np.ndarray],
    spec: PointerSpec,
    *,
    device: str = "cpu",
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
    target_only: bool = False,
) -> list[list[int]]:
    """Greedy output ids per row (decoder start included, cut after EOS) for an encoder feed
    (`core.source.encoder_feed`).

    ``target_only`` suppresses every id outside the trimmed decoder's vocabulary (decoder start,
    EOS, PAD and the target symbols), which is what a vocabulary-trimmed export computes.
    """
    import torch

    inputs = {name: torch.from_numpy(array).to(device) for name, array in feed.items()}
    suppress = None
    if target_only:
        vocab_size = (
            model.get_output_embeddings().out_features if hasattr(model, "lm_head") else model.config.vocab_size
        )
        suppress = np.setdiff1d(np.arange(vocab_size), spec.decoder_vocabulary()).tolist()
    steps = max_new_tokens or spec.max_target_tokens
    if hasattr(model, "greedy"):  # the pointing kinds decode themselves, with past keys/values
        suppress_ids = None if not suppress else torch.tensor(suppress, device=device)
        return _cut(model.greedy(**inputs, max_new_tokens=steps, suppress=suppress_ids).tolist(), spec)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=steps,
            min_new_tokens=min_new_tokens,
            num_beams=1,
            do_sample=False,
            **({"suppress_tokens": suppress} if suppress else {}),
        )
    return _cut(out.tolist(), spec)


def _cut(out: list[list[int]], spec: PointerSpec) -> list[list[int]]:
    rows = []
    for row in out:
        tail = row[1:]
        rows.append(row[: tail.index(spec.eos_id) + 2] if spec.eos_id in tail else row)
    return rows


class TorchParser:
    """Greedy decoding with ``model.generate`` on a trained checkpoint."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceError("--device cuda: torch sees no CUDA device")
        if threads:
            torch.set_num_threads(threads)
        model_dir = Path(model_dir)
        self.spec = checkpoint_spec(model_dir)
        self.source = load_source(model_dir, self.spec)
        self.model = load_checkpoint(model_dir).to(device)
        self.device = device

    def generate_ids(
        self, sources: Sequence[Sequence[int]], word_starts: Sequence[Sequence[int]] | None = None, **kwargs
    ) -> list[list[int]]:
        """Greedy output ids per row; see greedy_generate."""
        feed = encoder_feed(sources, self.spec, word_starts)
        return greedy_generate(self.model, feed, self.spec, device=self.device, **kwargs)

    def parse_batch(self, utterances: Sequence[str]) -> list[Intent | Rejected | None]:
        """Trees per utterance; None where the output is malformed (or never ended), Rejected where
        the input cannot be encoded."""
        encoded = []
        for utterance in utterances:
            try:
                encoded.append(self.source.prepare(utterance))
            except InputError as exc:
                encoded.append(Rejected(str(exc)))
        usable = [e for e in encoded if not isinstance(e, Rejected)]
        starts = [e.word_starts for e in usable] if usable and usable[0].word_starts is not None else None
        outputs = iter(self.generate_ids([e.ids for e in usable], starts) if usable else [])
        trees: list[Intent | None] = []
        for entry in encoded:
            if isinstance(entry, Rejected):
                trees.append(entry)
                continue
            row = next(outputs)
            # a row that never reached EOS hit the step cap: malformed, as the ONNX runtime treats it
            ended = self.spec.eos_id in row[1:]
            trees.append(self.spec.try_decode(row[1:], entry.utterance, entry.words) if ended else None)
        return trees

"""The PyTorch reference engine: a trained checkpoint decoded with transformers ``generate``.

It is what `evaluate --engine torch` runs and what the exporter's parity check compares against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtop_edge.core.forms import Intent
from mtop_edge.core.source import SourceEncoder, pad_batch
from mtop_edge.core.spec import PointerSpec
from mtop_edge.errors import DeviceError, InputError, ModelError, require
from mtop_edge.formats import checkpoint_spec
from mtop_edge.metrics import Rejected


def load_checkpoint(model_dir: str | Path):
    """A seq2seq model from a checkpoint directory, with errors that name the broken file."""
    require("torch", "train")
    require("transformers", "train")
    from transformers import AutoModelForSeq2SeqLM

    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if model_dir.is_dir() and not config.is_file():
        raise ModelError(f"{config}: missing (not a Hugging Face checkpoint)")
    try:
        if is_pointer_head_checkpoint(model_dir):
            from mtop_edge.modeling.pointer_head import PointerHeadT5

            return PointerHeadT5.from_pretrained(str(model_dir)).eval()
        return AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
    except Exception as exc:  # safetensors, torch and transformers each raise their own types for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_dir}: cannot load the checkpoint ({first_line})") from None


def is_pointer_head_checkpoint(model_dir: Path) -> bool:
    """Whether a checkpoint directory holds a pointer-head model (``pointer_head`` in its config)."""
    import json

    try:
        return bool(json.loads((Path(model_dir) / "config.json").read_text()).get("pointer_head"))
    except (OSError, ValueError, AttributeError):
        return False  # from_pretrained reports unreadable configs with its own message


def greedy_generate(
    model,
    sources: Sequence[Sequence[int]],
    spec: PointerSpec,
    *,
    device: str = "cpu",
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
    target_only: bool = False,
) -> list[list[int]]:
    """Greedy ``generate`` output ids per row (decoder start included, cut after EOS).

    ``target_only`` suppresses every id outside the trimmed decoder's vocabulary (decoder start,
    EOS, PAD and the target symbols), which is what a vocabulary-trimmed export computes.
    """
    import torch

    padded, padded_mask = pad_batch(sources, spec.pad_id)
    ids, mask = torch.from_numpy(padded), torch.from_numpy(padded_mask)
    kwargs = {}
    if target_only:
        import numpy as np

        vocab_size = model.get_output_embeddings().out_features
        kwargs["suppress_tokens"] = np.setdiff1d(np.arange(vocab_size), spec.decoder_vocabulary()).tolist()
    if getattr(model.config, "pointer_head", False):
        suppress = kwargs.get("suppress_tokens")
        out = model.greedy(
            ids.to(device),
            mask.to(device),
            max_new_tokens=max_new_tokens or spec.max_target_tokens,
            suppress=None if suppress is None else torch.tensor(suppress, device=device),
        )
        return _cut(out.tolist(), spec)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens or spec.max_target_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=1,
            do_sample=False,
            **kwargs,
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
        self.source = SourceEncoder.load(model_dir, self.spec)
        self.model = load_checkpoint(model_dir).to(device)
        self.device = device

    def generate_ids(self, sources: Sequence[Sequence[int]], **kwargs) -> list[list[int]]:
        """Greedy output ids per row; see greedy_generate."""
        return greedy_generate(self.model, sources, self.spec, device=self.device, **kwargs)

    def parse_batch(self, utterances: Sequence[str]) -> list[Intent | Rejected | None]:
        """Trees per utterance; None where the output is malformed (or never ended), Rejected where
        the input cannot be encoded."""
        encoded = []
        for utterance in utterances:
            try:
                source = self.source.prepare(utterance)
                encoded.append((utterance, source.words, source.ids))
            except InputError as exc:
                encoded.append(Rejected(str(exc)))
        usable = [e for e in encoded if not isinstance(e, Rejected)]
        outputs = iter(self.generate_ids([e[2] for e in usable]) if usable else [])
        trees: list[Intent | None] = []
        for entry in encoded:
            if isinstance(entry, Rejected):
                trees.append(entry)
                continue
            row = next(outputs)
            # a row that never reached EOS hit the step cap: malformed, as the ONNX runtime treats it
            ended = self.spec.eos_id in row[1:]
            trees.append(self.spec.try_decode(row[1:], entry[0], entry[1]) if ended else None)
        return trees

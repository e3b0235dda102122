"""The engines compared by `mtop-edge bench`, behind one small interface.

Every engine gets the same encoded source ids (tokenization is outside the timing) and returns
the checkpoint's target ids per row, decoder start and EOS excluded, so outputs can be scored
and compared. ``forced_steps`` makes every engine decode exactly that many steps (random weights).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mtop_edge.bench.names import EngineName

ENGINES = (
    "mtop-edge-int8",
    "mtop-edge-fp32",
    "mtop-edge-int8-unconstrained",
    "mtop-edge-fp32-unconstrained",
    "torch-fp32",
    "torch-bf16",
    "optimum-fp32",
    "optimum-int8",
    "ctranslate2-int8",
    "ctranslate2-fp32",
    "ctranslate2-int8-vmap",
    "ctranslate2-fp32-vmap",
)


# What a run measures when --engines is not given: bf16 generate is a GPU engine (slow and unrepresentative on a CPU)
DEFAULT_ENGINES = {
    "cpu": tuple(e for e in ENGINES if e != "torch-bf16"),
    "cuda": ("mtop-edge-fp32", "mtop-edge-fp32-unconstrained", "torch-fp32", "torch-bf16"),
}


class Engine:
    def run(
        self,
        sources: Sequence[Sequence[int]],
        n_words: Sequence[int],
        word_starts: Sequence[Sequence[int]] | None,
        forced_steps: int | None,
    ) -> list[list[int]]:
        raise NotImplementedError


class MtopEdgeEngine(Engine):
    """The mtop-edge runtime on its own export."""

    def __init__(self, model_dir: Path, *, threads: int, device: str, constrained: bool, pool=None) -> None:
        from mtop_edge.runtime import Parser

        constraints = "pairs" if constrained else "none"
        self.parser = Parser.load(model_dir, threads=threads, device=device, pool=pool, constraints=constraints)

    def run(self, sources, n_words, word_starts, forced_steps):
        decoded = self.parser.decode_ids(sources, n_words, word_starts, forced_steps=forced_steps)
        return [self.parser.original_ids(ids) for ids in decoded.ids]


class GenerateEngine(Engine):
    """transformers-style ``generate``: PyTorch on the checkpoint, or optimum's ORTModelForSeq2SeqLM."""

    def __init__(self, model, spec, device: str) -> None:
        self.model, self.spec, self.device = model, spec, device

    def run(self, sources, n_words, word_starts, forced_steps):
        from mtop_edge.core.source import encoder_feed
        from mtop_edge.modeling.torch_engine import greedy_generate

        rows = greedy_generate(
            self.model,
            encoder_feed(sources, self.spec, word_starts),
            self.spec,
            device=self.device,
            max_new_tokens=forced_steps or self.spec.max_target_tokens,
            min_new_tokens=forced_steps,
        )
        eos = self.spec.eos_id  # rows start with the decoder start and end with EOS where one came
        return [row[1:-1] if len(row) > 1 and row[-1] == eos else row[1:] for row in rows]


def torch_engine(checkpoint: Path, spec, *, threads: int, device: str, dtype: str = "fp32") -> GenerateEngine:
    import torch

    from mtop_edge.modeling.torch_engine import load_checkpoint

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint).to(device)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    return GenerateEngine(model, spec, device)


def optimum_engine(model_dir: Path, spec, *, threads: int, device: str) -> GenerateEngine:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    model = ORTModelForSeq2SeqLM.from_pretrained(model_dir, session_options=options, provider=provider)
    return GenerateEngine(model, spec, device)


class CTranslate2Engine(Engine):
    """CTranslate2's Translator on a converted checkpoint; ``vmap`` restricts the target vocabulary."""

    def __init__(self, model_dir: Path, spec, *, threads: int, device: str, vmap: bool) -> None:
        import ctranslate2

        self.translator = ctranslate2.Translator(
            str(model_dir), device=device, intra_threads=threads, inter_threads=1, compute_type="default"
        )
        self.vocabulary = json.loads((model_dir / "shared_vocabulary.json").read_text())
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        self.spec, self.vmap = spec, vmap

    def run(self, sources, n_words, word_starts, forced_steps):
        tokens = [[self.vocabulary[i] for i in source] for source in sources]
        steps = forced_steps or self.spec.max_target_tokens
        results = self.translator.translate_batch(
            tokens,
            beam_size=1,
            max_decoding_length=steps,
            min_decoding_length=forced_steps or 0,
            use_vmap=self.vmap,
            return_end_token=False,
        )
        return [[self.index[t] for t in r.hypotheses[0]] for r in results]


def load_engine(name: str, artifacts: dict[str, str], spec, *, threads: int, device: str, pool=None) -> Engine:
    """Build one engine from the model's artifacts (paths by kind)."""
    engine = EngineName.parse(name)
    if engine.family == "mtop-edge":
        path = Path(artifacts[engine.base])
        return MtopEdgeEngine(path, threads=threads, device=device, constrained=engine.constrained, pool=pool)
    if engine.family == "torch":
        return torch_engine(Path(artifacts["checkpoint"]), spec, threads=threads, device=device, dtype=engine.precision)
    if engine.family == "optimum":
        return optimum_engine(Path(artifacts[engine.base]), spec, threads=threads, device=device)
    if engine.family == "ctranslate2":
        return CTranslate2Engine(
            Path(artifacts[engine.base]), spec, threads=threads, device=device, vmap=engine.variant == "vmap"
        )
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")

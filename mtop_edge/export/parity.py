"""Parity: the exported graphs must be the parser the checkpoint defines.

fp32 ONNX greedy output must equal PyTorch ``generate`` token for token (restricted to the
target vocabulary when the decoder is trimmed, which is what a trimmed decoder computes, and with
unseen source pieces read as <unk> when the encoder was trimmed); int8/fp16 report the share of
outputs identical to fp32 and the exact match of both. Exact match uses the runtime as users run
it (constrained); token agreement compares unconstrained outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mtop_edge.core.forms import same_parse
from mtop_edge.core.source import Source, SourceEncoder, encoder_feed
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example, encodable
from mtop_edge.errors import ModelError
from mtop_edge.metrics import id_exact_matches

BATCH = 32


def _batched(function, items: Sequence, size: int = BATCH) -> list:
    out: list = []
    for i in range(0, len(items), size):
        out.extend(function(items[i : i + size]))
    return out


def _parsers(model_dir: Path, *, threads: int | None):
    """An unconstrained and a constrained parser over one set of sessions (a directory loads once)."""
    from mtop_edge.manifest import Manifest
    from mtop_edge.runtime import Parser
    from mtop_edge.runtime.decoder import GreedyDecoder
    from mtop_edge.runtime.sessions import SessionFactory

    manifest = Manifest.load(model_dir)
    decoder = GreedyDecoder(manifest, SessionFactory(threads=threads))
    return Parser(manifest, decoder, constraints="none"), Parser(manifest, decoder)


def _onnx_ids(parser, sources: Sequence[Source]) -> list[list[int]]:
    """Unconstrained runtime output per row, as checkpoint ids (EOS kept where reached)."""

    def run(chunk):
        decoded = parser.decode_sources(chunk)
        return [
            parser.original_ids(ids) + ([parser.spec.eos_id] if ended else [])
            for ids, ended in zip(decoded.ids, decoded.ended, strict=True)
        ]

    return _batched(run, sources)


def _exact_match(parser, examples: Sequence[Example]) -> float:
    trees = _batched(lambda chunk: parser.parse_trees([e.utterance for e in chunk]), examples)
    return sum(same_parse(t, e.tree) for t, e in zip(trees, examples, strict=True)) / len(examples)


def check(
    model,
    spec: PointerSpec,
    encoder: SourceEncoder,
    examples: Sequence[Example],
    *,
    rows: int,
    fp32_dir: Path,
    quantized_dir: Path | None,
    trimmed_decoder: bool = True,
    encoder_ids: Sequence[int] | None = None,
    threads: int | None = None,
) -> dict:
    """Run the parity checks; returns the figures stored in the manifest.

    Raises:
        ModelError: fp32 ONNX output differs from PyTorch on some row (the first is shown).
    """
    from mtop_edge.modeling.torch_engine import greedy_generate

    selected, sources = encodable(examples, encoder, rows)
    if not selected:
        return {"rows": 0, "skipped": True}
    reference = sources
    if encoder_ids is not None:  # the export reads unseen source pieces as <unk>: so must the reference
        kept = set(encoder_ids)
        reference = [replace(s, ids=[i if i in kept else spec.unk_id for i in s.ids]) for s in sources]

    def generate(target_only: bool):  # generate's rows without the decoder start; EOS kept when present
        def run(chunk):
            feed = encoder_feed([s.ids for s in chunk], spec, [s.word_starts for s in chunk])
            return [ids[1:] for ids in greedy_generate(model, feed, spec, target_only=target_only)]

        return _batched(run, reference)

    free_ids = generate(target_only=False)
    targets = set(spec.decoder_vocabulary())
    outside = sum(any(i not in targets for i in ids) for ids in free_ids)
    # the reference a trimmed decoder must match: generate restricted to the targets
    torch_ids = generate(target_only=True) if trimmed_decoder else free_ids
    fp32_free, fp32_constrained = _parsers(fp32_dir, threads=threads)
    fp32_ids = _onnx_ids(fp32_free, sources)
    identical = sum(a == b for a, b in zip(torch_ids, fp32_ids, strict=True))
    hits, _ = id_exact_matches(spec, torch_ids, [e.tree for e in selected], sources)
    report = {
        "rows": len(selected),
        "fp32_identical_to_torch": identical,
        "fp32_identical_share": identical / len(selected),
        "torch_rows_with_non_target_tokens": outside,
        "torch_exact_match": hits / len(selected),
        "fp32_exact_match": _exact_match(fp32_constrained, selected),
    }
    if identical != len(selected):
        row = next(i for i, (a, b) in enumerate(zip(torch_ids, fp32_ids, strict=True)) if a != b)
        raise ModelError(
            f"parity failed: fp32 ONNX output equals PyTorch generate on {identical} of {len(selected)} rows; "
            f"first difference on {selected[row].utterance!r}: torch {torch_ids[row]} vs onnx {fp32_ids[row]}"
        )
    if quantized_dir is not None:
        quantized_free, quantized_constrained = _parsers(quantized_dir, threads=threads)
        quantized_ids = _onnx_ids(quantized_free, sources)
        same = sum(a == b for a, b in zip(fp32_ids, quantized_ids, strict=True))
        report["quantized_identical_to_fp32"] = same
        report["quantized_identical_share"] = same / len(selected)
        report["quantized_exact_match"] = _exact_match(quantized_constrained, selected)
    return report

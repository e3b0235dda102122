"""Parity: the exported graphs must be the parser the checkpoint defines.

fp32 ONNX greedy output must equal PyTorch ``generate`` token for token (restricted to the
target vocabulary when the decoder is trimmed, which is what a trimmed decoder computes, and with
unseen source pieces read as <unk> when the encoder was trimmed); int8/fp16 report the share of
outputs identical to fp32 and the exact match of both. Exact match uses the runtime as users run
it (constrained); token agreement compares unconstrained outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtop_edge.core.forms import same_parse
from mtop_edge.core.source import SourceEncoder
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example
from mtop_edge.errors import InputError, ModelError

BATCH = 32


def _rows(examples: Sequence[Example], encoder: SourceEncoder, n: int) -> list[tuple[Example, list, list[int]]]:
    rows = []
    for example in examples:
        try:
            source = encoder.prepare(example.utterance)
            rows.append((example, source.words, source.ids))
        except InputError:
            continue
        if len(rows) == n:
            break
    return rows


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

    manifest = Manifest.load(model_dir)
    decoder = GreedyDecoder(manifest, threads=threads)
    return Parser(manifest, decoder, constrain=False), Parser(manifest, decoder)


def _onnx_ids(parser, rows) -> list[list[int]]:
    """Unconstrained runtime output per row, as checkpoint ids (EOS kept where reached)."""

    def run(chunk):
        decoded = parser.decode_ids([r[2] for r in chunk], [len(r[1]) for r in chunk])
        return [
            parser.original_ids(ids) + ([parser.spec.eos_id] if ended else [])
            for ids, ended in zip(decoded.ids, decoded.ended, strict=True)
        ]

    return _batched(run, rows)


def _exact_match(parser, rows) -> float:
    trees = _batched(lambda chunk: parser.parse_trees([r[0].utterance for r in chunk]), rows)
    return sum(same_parse(t, r[0].tree) for t, r in zip(trees, rows, strict=True)) / len(rows)


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
    from mtop_edge.torch_engine import greedy_generate

    selected = _rows(examples, encoder, rows)
    if not selected:
        return {"rows": 0, "skipped": True}
    sources = [r[2] for r in selected]
    if encoder_ids is not None:  # the export reads unseen source pieces as <unk>: so must the reference
        kept = set(encoder_ids)
        sources = [[i if i in kept else spec.unk_id for i in source] for source in sources]

    def strip(ids: list[int]) -> list[int]:  # drop the decoder start; keep EOS when present
        return ids[1:]

    free_ids = [strip(i) for i in _batched(lambda c: greedy_generate(model, c, spec), sources)]
    targets = set(spec.decoder_vocabulary())
    outside = sum(any(i not in targets for i in ids) for ids in free_ids)
    if trimmed_decoder:  # the reference a trimmed decoder must match: generate restricted to the targets
        torch_ids = [strip(i) for i in _batched(lambda c: greedy_generate(model, c, spec, target_only=True), sources)]
    else:
        torch_ids = free_ids
    fp32_free, fp32_constrained = _parsers(fp32_dir, threads=threads)
    fp32_ids = _onnx_ids(fp32_free, selected)
    identical = sum(a == b for a, b in zip(torch_ids, fp32_ids, strict=True))

    torch_em = sum(
        same_parse(spec.try_decode(ids, row[0].utterance, row[1]), row[0].tree)
        for ids, row in zip(torch_ids, selected, strict=True)
    ) / len(selected)
    report = {
        "rows": len(selected),
        "fp32_identical_to_torch": identical,
        "fp32_identical_share": identical / len(selected),
        "torch_rows_with_non_target_tokens": outside,
        "torch_exact_match": torch_em,
        "fp32_exact_match": _exact_match(fp32_constrained, selected),
    }
    if identical != len(selected):
        row = next(i for i, (a, b) in enumerate(zip(torch_ids, fp32_ids, strict=True)) if a != b)
        raise ModelError(
            f"parity failed: fp32 ONNX output equals PyTorch generate on {identical} of {len(selected)} rows; "
            f"first difference on {selected[row][0].utterance!r}: torch {torch_ids[row]} vs onnx {fp32_ids[row]}"
        )
    if quantized_dir is not None:
        quantized_free, quantized_constrained = _parsers(quantized_dir, threads=threads)
        quantized_ids = _onnx_ids(quantized_free, selected)
        same = sum(a == b for a, b in zip(fp32_ids, quantized_ids, strict=True))
        report["quantized_identical_to_fp32"] = same
        report["quantized_identical_share"] = same / len(selected)
        report["quantized_exact_match"] = _exact_match(quantized_constrained, selected)
    return report

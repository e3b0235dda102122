"""`mtop-edge export`: checkpoint -> trimmed, quantized ONNX model directory (heavy deps, lazy).

The template is open -> resolve the options -> load -> write the kind's fp32 graphs -> quantize ->
share weights -> check parity -> write the card and move into place. Work happens in a temporary
directory beside the output, renamed into place only when everything passed: a failed or
interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mtop_edge import __version__
from mtop_edge.data import EVAL_SAMPLE, read_examples
from mtop_edge.errors import MtopEdgeError, require
from mtop_edge.export import cross_kv, encoder_pointer, graphs, parity, row_groups, t5
from mtop_edge.export.card import model_card
from mtop_edge.export.checkpoint import Checkpoint
from mtop_edge.export.options import CrossKvDtype, DecoderWeights, ExportOptions, Precision
from mtop_edge.export.shared_weights import share_weights
from mtop_edge.export.trim import decoder_ids, encoder_ids
from mtop_edge.layout import ENCODER, SMALL_BATCH_STEP, UNGROUPED_STEP, DecoderLayout
from mtop_edge.manifest import MANIFEST_VERSION, WEIGHTS_FILE, write_manifest

OPTIMUM_CONFIGS = ("config.json", "generation_config.json")  # kept so optimum can load an export as a cross-check


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "mtop_edge": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _write(directory: Path, manifest: dict, checkpoint: Checkpoint) -> None:
    """Copy the source tokenizer, record the file sizes and write the manifest (it must load back)."""
    shutil.copyfile(checkpoint.tokenizer_file, directory / checkpoint.tokenizer_file.name)
    manifest["sizes"] = {
        p.name: p.stat().st_size
        for p in sorted(directory.iterdir())
        if p.suffix == ".onnx" or p.name in (WEIGHTS_FILE, checkpoint.tokenizer_file.name)
    }
    manifest["total_bytes"] = sum(manifest["sizes"].values())
    write_manifest(directory, manifest)


def _quantize(fp32: Path, scratch: Path, files: list[str], options: ExportOptions, kind_ops, log) -> tuple[Path, dict]:
    """The quantized copy of the fp32 graphs (or the fp32 directory itself), and what was done."""
    if options.quantize is Precision.NONE:
        return fp32, {}
    log(f"converting to {options.quantize.value}")
    stage = scratch / "model"
    stage.mkdir()
    if options.quantize is Precision.INT8:
        merged = options.layout is DecoderLayout.MERGED
        details = graphs.quantize_int8(fp32, stage, files, options.quantization, kind_ops, subgraphs=merged)
    else:
        details = graphs.convert_fp16(fp32, stage, files)
    for config_file in OPTIMUM_CONFIGS:
        if (fp32 / config_file).is_file():
            shutil.copyfile(fp32 / config_file, stage / config_file)
    return stage, details


def _manifest(source: Checkpoint, options: ExportOptions, built, name: str) -> dict:
    """The manifest of the fp32 graphs (quantization, sizes and parity are added as they happen)."""
    return {
        "format_version": MANIFEST_VERSION,
        "name": name,
        "kind": "encoder-pointer" if source.encoder_pointer else "t5",
        "profile": options.name,
        "options": options.to_json(),
        "architecture": built.architecture,
        "pointer": source.spec.to_json(),
        "decoder_layout": options.layout.value,
        "quantization": "none",
        "source": {"checkpoint": source.name, "sha256": source.sha256},
        "versions": _versions(),
        **built.manifest,
    }


def _parity(model, source, options, data, fp32, stage, trims, threads, log) -> dict:
    """The parity figures against the checkpoint (raises ModelError where fp32 differs from PyTorch)."""
    where = str(data or EVAL_SAMPLE)
    if options.parity_rows <= 0:
        return {"skipped": True, "data": where}
    log(f"checking parity on {options.parity_rows} rows of {where}")
    figures = parity.check(
        model,
        source.spec,
        source.source,
        read_examples(data or EVAL_SAMPLE),
        rows=options.parity_rows,
        fp32_dir=fp32,
        quantized_dir=stage if stage != fp32 else None,
        trimmed_decoder=trims["keep_decoder"] is not None,
        encoder_ids=trims["keep_encoder"],
        threads=threads,
    )
    return {**figures, "data": where}


def export_model(
    checkpoint: str,
    out: str | Path,
    options: ExportOptions,
    *,
    data: str | Path | None = None,
    trim_input_data: str | Path | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    name: str | None = None,
    profile: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Export a checkpoint into the model directory ``out``; returns its manifest.

    ``name`` is the model's name in the manifest (default: the checkpoint directory's name); with
    the checkpoint's hash it says which model answered (``name@hash``). ``profile`` is the profile
    file the options came from, for the model card's "Reproduce it".

    Raises:
        MtopEdgeError: ``out`` exists without ``overwrite``, or options that conflict; ModelError: a
        missing or corrupt checkpoint, or fp32 parity failed (nothing is written then).
    """
    for module in ("torch", "transformers", "optimum", "onnx"):
        require(module, "export")
    from mtop_edge.modeling.torch_engine import is_pointer_head_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise MtopEdgeError(f"{out} exists: pass --overwrite to replace it")
    source = Checkpoint.open(checkpoint)
    kind = encoder_pointer if source.encoder_pointer else t5
    options, notes = options.resolve(
        pointer_head=is_pointer_head_checkpoint(source.path), encoder_pointer=source.encoder_pointer
    )
    for note in notes:
        log(note)
    model = kind.load_model(source.path)
    log(f"loaded {checkpoint}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    spec = source.spec
    keep_decoder = decoder_ids(spec) if options.trim else None
    keep_encoder = encoder_ids(spec, source.seen_source_ids(trim_input_data)) if options.trim_input else None

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fp32 = scratch / "fp32"
        fp32.mkdir()
        trims = {"keep_decoder": keep_decoder, "keep_encoder": keep_encoder}
        built = kind.write_graphs(model, spec, options, fp32, **trims, log=log)
        manifest = _manifest(source, options, built, name or Path(str(checkpoint).rstrip("/")).name)
        manifest.update(decoder_ids=keep_decoder, encoder_ids=keep_encoder)
        if kind.PARITY_NEEDS_FRESH_MODEL:
            del model
            model = kind.load_model(source.path)
        keep = {*built.files, *OPTIMUM_CONFIGS}
        for path in fp32.iterdir():  # tokenizer copies and the like: the runtime reads its source tokenizer only
            if path.name not in keep:
                path.unlink()
        _write(fp32, manifest, source)
        stage, details = _quantize(fp32, scratch, built.files, options, kind.int8_ops, log)
        if details:
            manifest.update(quantization=options.quantize.value, quantization_details=details)
        files = list(built.files)
        twins = []  # (max rows, file): twins of the step graph for calls of a few rows, narrowest first
        if options.decoder_weights is DecoderWeights.PER_BATCH:
            twins.append((graphs.SMALL_BATCH_ROWS, SMALL_BATCH_STEP))
            log(f"per-batch decoder weights: calls of at most {graphs.SMALL_BATCH_ROWS} rows run {SMALL_BATCH_STEP}")
        if options.cross_kv_dtype is CrossKvDtype.FLOAT16:
            log("cross keys/values handed to the decoder in float16")
            # the 4-bit step keeps float32 inputs: the runtime widens them once per call, not per step
            decoders = [name for name in files if name != ENCODER]
            manifest["cross_kv_float16"] = cross_kv.store_cross_kv_fp16(stage, decoders)
        if (groups := options.cross_attention_groups) > 1:
            if options.share_weights:  # the twin shares every weight with the step: a graph file, not a model
                twins.append((row_groups.UNGROUPED_ROWS, row_groups.copy_ungrouped_step(stage)))
                log(f"calls of at most {row_groups.UNGROUPED_ROWS} rows run {UNGROUPED_STEP} (no row groups)")
            else:
                log("share_weights = false: no step without row groups for small calls (it would copy the weights)")
            attentions = row_groups.group_step(stage, groups)
            manifest["cross_attention_groups"] = groups
            log(f"decoder steps attend to the encoder in {groups} row groups ({attentions} cross-attentions)")
        files += [file for _, file in twins]
        if twins:
            manifest["small_batch_steps"] = [{"file": file, "max_rows": rows} for rows, file in twins]
        if options.optimize != "none":
            graphs.optimize_offline(stage, files, options.optimize)
        if options.share_weights:
            manifest["shared_weights"] = shared = share_weights(stage, files)
            log(f"shared weights: {shared['bytes_before'] / 1e6:.2f} MB -> {shared['bytes_after'] / 1e6:.2f} MB")
        _write(stage, manifest, source)
        manifest["parity"] = _parity(model, source, options, data, fp32, stage, trims, threads, log)
        _write(stage, manifest, source)
        (stage / "README.md").write_text(model_card(manifest, checkpoint, profile))
        if out.exists():  # --overwrite: swap the old directory out only now that the new one is complete
            shutil.move(out, scratch / "old")
        shutil.move(stage, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest

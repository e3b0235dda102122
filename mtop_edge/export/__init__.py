"""`mtop-edge export`: checkpoint -> trimmed, quantized ONNX model directory (heavy deps, lazy).

The template is load -> validate -> trim -> export -> quantize -> check parity -> save. Work happens
in a temporary directory beside the output, renamed into place only when everything passed: a
failed or interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mtop_edge import __version__
from mtop_edge.core.source import SourceEncoder
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import read_examples
from mtop_edge.errors import ModelError, MtopEdgeError, require
from mtop_edge.export import cross_kv, fusion, graphs, parity, pointer_head
from mtop_edge.export.options import ExportOptions
from mtop_edge.export.shared_weights import share_weights
from mtop_edge.export.trim import decoder_ids, encoder_ids, trimmed
from mtop_edge.formats import checkpoint_spec
from mtop_edge.manifest import (
    DECODER,
    DECODER_WITH_PAST,
    ENCODER,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    WEIGHTS_FILE,
    Manifest,
)

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "eval_sample.jsonl"
SOURCE_VOCAB_FILE = "source_vocab.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
OPTIMUM_CONFIGS = ("config.json", "generation_config.json")  # kept so optimum can load an export as a cross-check


def resolve_checkpoint(name: str) -> Path:
    """A local checkpoint directory, or a hub id downloaded into the Hugging Face cache.

    Raises:
        ModelError: neither a directory nor a downloadable hub id.
    """
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise ModelError(f"{name}: not a checkpoint directory (nor a hub id like org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name))
    except Exception as exc:  # offline, unknown repo, auth: all mean "cannot get it"
        raise ModelError(f"{name}: cannot download from the Hugging Face hub ({type(exc).__name__}: {exc})") from None


def checkpoint_hash(directory: Path) -> str:
    """sha256 of the checkpoint's weights: of the one weight file (what `sha256sum` prints), or for a
    sharded checkpoint over its files in name order, each preceded by its name."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)})
    if not files:
        raise ModelError(f"{directory}: no weight file (model.safetensors or pytorch_model.bin)")
    digest = hashlib.sha256()
    for path in files:
        if len(files) > 1:
            digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def seen_source_ids(checkpoint: Path, data: Path | None, encoder: SourceEncoder) -> list[int]:
    """Source ids seen in training: recorded by `mtop-edge train`, or computed from ``data``."""
    if data is None:
        recorded = checkpoint / SOURCE_VOCAB_FILE
        if not recorded.is_file():
            raise MtopEdgeError(f"--trim-input: {recorded} is missing; pass --trim-input-data with the training rows")
        return json.loads(recorded.read_text())
    seen: set[int] = set()
    for example in read_examples(data):
        try:
            seen.update(encoder.prepare(example.utterance).ids)
        except MtopEdgeError:
            continue
    return sorted(seen)


def _architecture(config, decoder_vocab: int, encoder_vocab: int) -> dict:
    return {
        "d_model": config.d_model,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "d_kv": config.d_kv,
        "encoder_vocab": encoder_vocab,
        "decoder_vocab": decoder_vocab,
    }


def _versions() -> dict:
    import onnx
    import onnxruntime
    import optimum.version
    import torch
    import transformers

    return {
        "mtop_edge": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optimum": optimum.version.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _write_support(directory: Path, manifest: dict, tokenizer_path: Path) -> None:
    """Copy the source tokenizer (spiece.model, or a DAMP checkpoint's tokenizer.json) and write the manifest."""
    shutil.copyfile(tokenizer_path, directory / tokenizer_path.name)
    manifest["sizes"] = {
        p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.suffix == ".onnx" or p.name == WEIGHTS_FILE
    }
    manifest["sizes"][tokenizer_path.name] = (directory / tokenizer_path.name).stat().st_size
    manifest["total_bytes"] = sum(manifest["sizes"].values())
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    Manifest.load(directory)  # what we wrote must read back


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
    log: Callable[[str], None] = print,
) -> dict:
    """Export a checkpoint into the model directory ``out``; returns its manifest.

    ``name`` is the model's name in the manifest (default: the checkpoint directory's name); with
    the checkpoint's hash it says which model answered (``name@hash``).

    Raises:
        MtopEdgeError: ``out`` exists without ``overwrite``; ModelError: a missing or corrupt
        checkpoint, or fp32 parity failed (nothing is written then).
    """
    for module in ("torch", "transformers", "optimum", "onnx"):
        require(module, "export")
    from mtop_edge.torch_engine import load_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise MtopEdgeError(f"{out} exists: pass --overwrite to replace it")
    # option conflicts first: before any download or model load
    if options.fuse and options.merged:
        raise MtopEdgeError("fuse = true works on separate decoders: set merged = false")
    if options.decoder_weights == "int4" and options.quantize != "int8":
        raise MtopEdgeError(f"decoder_weights = int4 needs quantize = int8, not {options.quantize}")
    if options.encoder_cross_kv and options.merged:
        # the merged decoder serves the first step itself: nothing to move
        options = dataclasses.replace(options, encoder_cross_kv=False)
    if options.fuse and options.quantize == "fp16":
        # the fp16 converter keeps overflow-prone nodes in fp32 by their unfused names
        options = dataclasses.replace(options, fuse=False)
        log("fp16: graphs left unfused (fusion is for the CPU int8/fp32 graphs)")
    source = resolve_checkpoint(checkpoint)
    spec = checkpoint_spec(source)
    encoder = SourceEncoder.load(source, spec)
    tokenizer_path = source / spec.tokenizer
    examples = read_examples(data or SAMPLE)
    weights_hash = checkpoint_hash(source)
    model = load_checkpoint(source)
    log(f"loaded {checkpoint}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    pointer_model = None
    if pointer_head.is_pointer_head(model):
        if options.merged:
            raise MtopEdgeError("a pointer-head model exports as separate decoders: merged = false")
        pointer_model, model = model, pointer_head.plain_model(model)
        if options.quantize == "int8" and not options.per_channel:
            # the output layer's MatMul also carries the pointer projection, whose values one
            # per-tensor scale (set by the vocabulary rows) crushes: measured 11/200 outputs equal
            # to fp32 per tensor, 189/200 per channel
            options = dataclasses.replace(options, per_channel=True)
            log("pointer head: int8 weights get per-channel scales")
    config = model.config

    keep_decoder = decoder_ids(spec) if options.trim else None
    keep_encoder = encoder_ids(spec, seen_source_ids(source, trim_input_data, encoder)) if options.trim_input else None
    decoder_vocab = len(keep_decoder) if keep_decoder else model.get_output_embeddings().out_features
    encoder_vocab = len(keep_encoder) if keep_encoder else model.get_input_embeddings().num_embeddings
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": name or Path(str(checkpoint).rstrip("/")).name,
        "profile": options.name,
        "options": {k: v for k, v in vars(options).items() if k != "name"},
        "architecture": _architecture(config, decoder_vocab, encoder_vocab),
        "pointer": spec.to_json(),
        "decoder_ids": keep_decoder,
        "encoder_ids": keep_encoder,
        "merged": options.merged,
        "quantization": "none",
        "source": {"checkpoint": str(checkpoint), "sha256": weights_hash},
        "versions": _versions(),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fp32 = scratch / "fp32"
        log(f"exporting ONNX (decoder vocabulary {decoder_vocab}, encoder vocabulary {encoder_vocab})")
        with trimmed(model, keep_decoder, keep_encoder):
            if pointer_model is None:
                files = graphs.export_onnx(model, fp32, opset=options.opset, merged=options.merged)
            else:
                with pointer_head.with_query_rows(model, pointer_model, keep_decoder) as first_pointer:
                    files = graphs.export_onnx(model, fp32, opset=options.opset)
                manifest["pointer_head"] = _add_pointer_head(fp32, spec, keep_encoder, first_pointer)
        if options.encoder_cross_kv:
            log("moving the cross-attention keys/values into the encoder: one decoder graph for every step")
            manifest["encoder_cross_kv"] = cross_kv.move_cross_kv_to_encoder(
                fp32, num_heads=config.num_heads, d_kv=config.d_kv
            )
            files = [name for name in files if name != DECODER]
        if options.fuse:
            log("fusing attention, norms and GELU (onnxruntime's T5 fusion, CPU-runnable)")
            pack = options.quantize != "int8" or options.per_channel
            manifest["fusion"] = fusion.fuse_graphs(fp32, config, files, pack=pack)
        del model, pointer_model  # the exporter patches the model and its config; parity gets a fresh copy
        keep = {*files, *OPTIMUM_CONFIGS}
        for path in fp32.iterdir():  # tokenizer copies: the runtime reads its source tokenizer only
            if path.name not in keep:
                path.unlink()
        _write_support(fp32, manifest, tokenizer_path)
        stage = fp32
        if options.quantize != "none":
            stage = scratch / "model"
            stage.mkdir()
            log(f"converting to {options.quantize}")
            if options.quantize == "int8":
                int4 = tuple(name for name in files if name != ENCODER) if options.decoder_weights == "int4" else ()
                details = graphs.quantize_int8(fp32, stage, files, options, int4_files=int4)
            else:
                details = graphs.convert_fp16(fp32, stage, files)
            for config_file in OPTIMUM_CONFIGS:
                shutil.copyfile(fp32 / config_file, stage / config_file)
            manifest = {**manifest, "quantization": options.quantize, "quantization_details": details}
        if options.optimize != "none":
            graphs.optimize_offline(stage, files, options.optimize)
        if options.share_weights:
            manifest["shared_weights"] = share_weights(stage, files)
            log(
                f"shared weights: {manifest['shared_weights']['bytes_before'] / 1e6:.2f} MB -> "
                f"{manifest['shared_weights']['bytes_after'] / 1e6:.2f} MB"
            )
        _write_support(stage, manifest, tokenizer_path)
        if options.parity_rows > 0:
            log(f"checking parity on {options.parity_rows} rows of {data or SAMPLE}")
            manifest["parity"] = parity.check(
                load_checkpoint(source),
                spec,
                encoder,
                examples,
                rows=options.parity_rows,
                fp32_dir=fp32,
                quantized_dir=stage if stage != fp32 else None,
                trimmed_decoder=keep_decoder is not None,
                encoder_ids=keep_encoder,
                threads=threads,
            )
        else:
            manifest["parity"] = {"skipped": True}
        manifest["parity"]["data"] = str(data or SAMPLE)
        _write_support(stage, manifest, tokenizer_path)
        (stage / "README.md").write_text(model_card(manifest, checkpoint))
        if out.exists():  # --overwrite: swap the old directory out only now that the new one is complete
            shutil.move(out, scratch / "old")
        shutil.move(stage, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def _add_pointer_head(directory: Path, spec: PointerSpec, keep_encoder, first_pointer: int) -> dict:
    """Graph surgery for a pointer-head model (see export/pointer_head.py); returns the manifest entry."""
    markers = list(spec.pointer_ids)
    if keep_encoder is not None:
        position = {original: i for i, original in enumerate(keep_encoder)}
        markers = [position[m] for m in markers]
    pointer_head.add_pointer_outputs(directory / ENCODER, markers)
    for name in (DECODER, DECODER_WITH_PAST):
        pointer_head.add_pointer_scores(directory / name, first_pointer, len(markers))
    return {"num_pointers": len(markers), "first_pointer": first_pointer}


def model_card(manifest: dict, checkpoint: str) -> str:
    parity_figures = manifest.get("parity", {})
    lines = [
        "# mtop-edge model",
        "",
        "A task-oriented semantic parser (MTOP pointer format) exported by `mtop-edge export` for the",
        "mtop-edge runtime (onnxruntime + numpy + sentencepiece).",
        "",
        f"- Source checkpoint: `{checkpoint}` (weights sha256 `{manifest['source']['sha256'][:16]}...`)",
        f"- Profile: {manifest['profile']}; quantization: {manifest['quantization']}; "
        f"decoder vocabulary {manifest['architecture']['decoder_vocab']}, "
        f"encoder vocabulary {manifest['architecture']['encoder_vocab']}",
        f"- Size on disk: {manifest['total_bytes'] / 1e6:.1f} MB",
        f"- Parity ({parity_figures.get('rows', 0)} rows of {parity_figures.get('data')}): "
        + json.dumps({k: v for k, v in parity_figures.items() if k not in ("data",)}),
        "",
        "Use it:",
        "",
        "```",
        'mtop-edge parse --model THIS_DIR "set an alarm for 7am"',
        "```",
        "",
        "Reproduce it:",
        "",
        "```",
        f"mtop-edge export --model {checkpoint} --out THIS_DIR --quantize {manifest['quantization']}",
        "```",
        "",
    ]
    return "\n".join(lines)

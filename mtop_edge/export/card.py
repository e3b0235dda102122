"""The model card (README.md) written into every exported model directory."""

from __future__ import annotations

import json


def model_card(manifest: dict, checkpoint: str, profile: str | None) -> str:
    """What the model is, how big, how it scored against its checkpoint, and how to rebuild it."""
    parity_figures = manifest.get("parity", {})
    arch = manifest["architecture"]
    reproduce = f"mtop-edge export --model {checkpoint} --out THIS_DIR"
    if profile:
        reproduce += f" --profile {profile}"
    lines = [
        "# mtop-edge model",
        "",
        "A task-oriented semantic parser (MTOP pointer format) exported by `mtop-edge export` for the",
        "mtop-edge runtime (onnxruntime + numpy + sentencepiece/tokenizers).",
        "",
        f"- Source checkpoint: `{checkpoint}` (weights sha256 `{manifest['source']['sha256'][:16]}...`)",
        f"- Kind: {manifest.get('kind', 't5')}; profile: {manifest['profile']}; quantization: "
        f"{manifest['quantization']}; decoder layout: {manifest['decoder_layout']}; decoder vocabulary "
        f"{arch['decoder_vocab']}, encoder vocabulary {arch['encoder_vocab']}",
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
        reproduce,
        "```",
        "",
    ]
    return "\n".join(lines)

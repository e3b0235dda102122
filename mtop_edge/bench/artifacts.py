"""What each engine loads, built from one checkpoint and cached by the checkpoint's weight hash.

- mtop-edge: its own export (trimmed; int8 and fp32), and one export per ``--profile`` asked for
  (kind ``mtop-edge@NAME``), so export layouts compare in one run.
- optimum: ``ORTModelForSeq2SeqLM.from_pretrained(ckpt, export=True)`` as a user would run it, and
  the same quantized with optimum's documented dynamic config (AutoQuantizationConfig.avx512_vnni).
- CTranslate2: ``TransformersConverter`` to int8 and float32, with a vocabulary map file holding
  the target symbols (used only when a run asks for ``use_vmap``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from mtop_edge.bench.names import PROFILE_PREFIX
from mtop_edge.core.spec import PointerSpec

KINDS = ("mtop-edge-int8", "mtop-edge-fp32", "optimum-fp32", "optimum-int8", "ctranslate2-int8", "ctranslate2-fp32")
DONE = ".complete"


EXPORTER = Path(__file__).resolve().parent.parent / "export"


def needed_kinds(engines: list[str]) -> list[str]:
    from mtop_edge.bench.names import base_name

    kinds = {base_name(e) for e in engines} - {"torch-fp32", "torch-bf16"}
    if "optimum-int8" in kinds:
        kinds.add("optimum-fp32")
    return [k for k in KINDS if k in kinds]


def _build(path: Path, make: Callable[[Path], None]) -> Path:
    if (path / DONE).exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)  # creates ``path``
    (path / DONE).write_text("")
    return path


def profile_kind(profile: Path) -> str:
    """The artifact kind (and engine name) of an export profile: ``mtop-edge@`` + its name."""
    from mtop_edge.export.options import ExportOptions

    return PROFILE_PREFIX + ExportOptions.load(profile).name


def _mtop_edge(checkpoint: Path, options) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from mtop_edge.export import export_model

        export_model(str(checkpoint), path, options, log=lambda _: None)

    return make


def _optimum_fp32(checkpoint: Path) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from optimum.onnxruntime import ORTModelForSeq2SeqLM

        ORTModelForSeq2SeqLM.from_pretrained(checkpoint, export=True).save_pretrained(path)

    return make


def _optimum_int8(fp32: Path) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        path.mkdir()
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        for onnx_file in sorted(fp32.glob("*.onnx")):
            ORTQuantizer.from_pretrained(fp32, file_name=onnx_file.name).quantize(
                quantization_config=config, save_dir=path, file_suffix=None
            )
        for other in fp32.iterdir():
            if other.suffix == ".json":
                shutil.copyfile(other, path / other.name)

    return make


def _ctranslate2(checkpoint: Path, spec: PointerSpec, quantization: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        import ctranslate2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        targets = tokenizer.convert_ids_to_tokens(spec.decoder_vocabulary())
        vmap = path.parent / f"{path.name}.vmap.txt"
        vmap.write_text("\t" + " ".join(targets) + "\n")  # empty source n-gram: always candidates
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(path), vmap=str(vmap), quantization=quantization
        )
        vmap.unlink()

    return make


def build_artifacts(
    checkpoint: Path,
    spec: PointerSpec,
    kinds: list[str],
    work: Path,
    log=print,
    profiles: Sequence[Path] = (),
) -> dict[str, str]:
    """Paths of every needed artifact (built once per checkpoint hash), plus the checkpoint itself.

    Each export profile in ``profiles`` adds the kind ``mtop-edge@NAME``, cached by the profile's content.
    """
    import hashlib

    from mtop_edge.export import checkpoint_hash
    from mtop_edge.export.options import ExportOptions

    root = work / f"{checkpoint.name}-{checkpoint_hash(checkpoint)[:12]}"
    makers = {
        "optimum-fp32": lambda: _optimum_fp32(checkpoint),
        "optimum-int8": lambda: _optimum_int8(root / "optimum-fp32"),
        "ctranslate2-int8": lambda: _ctranslate2(checkpoint, spec, "int8"),
        "ctranslate2-fp32": lambda: _ctranslate2(checkpoint, spec, "float32"),
    }
    folders = {kind: kind for kind in kinds}
    # our exports are cached by their options and the exporter's code too: a changed default or a
    # changed graph transformation must not reuse an old export
    exporter = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(EXPORTER.glob("*.py"))))
    exports = {
        "mtop-edge-int8": ExportOptions.load(None, quantize="int8", parity_rows=0),
        "mtop-edge-fp32": ExportOptions.load(None, quantize="none", parity_rows=0),
    }
    exports = {kind: options for kind, options in exports.items() if kind in folders}
    exports.update({profile_kind(p): ExportOptions.load(p, parity_rows=0) for p in profiles})
    for kind, options in exports.items():
        digest = hashlib.sha256(options.to_toml().encode() + exporter.digest()).hexdigest()[:8]
        makers[kind] = lambda options=options: _mtop_edge(checkpoint, options)
        folders[kind] = f"{kind}-{digest}"
    paths = {"checkpoint": str(checkpoint)}
    for kind, folder in folders.items():
        if not (root / folder / DONE).exists():
            log(f"  building {kind} for {checkpoint.name}")
        paths[kind] = str(_build(root / folder, makers[kind]()))
    return paths


def size_on_disk(engine: str, artifacts: dict[str, str]) -> int:
    """Bytes an engine loads from disk (the checkpoint's weights and tokenizer model for PyTorch)."""
    from mtop_edge.bench.names import base_name

    base = base_name(engine)
    if base.startswith("torch"):
        from mtop_edge.export.checkpoint import WEIGHT_PATTERNS

        root = Path(artifacts["checkpoint"])
        files = {p for pattern in (*WEIGHT_PATTERNS, "*.json", "spiece.model") for p in root.glob(pattern)}
        return sum(p.stat().st_size for p in files)
    return sum(p.stat().st_size for p in Path(artifacts[base]).rglob("*") if p.is_file() and p.name != DONE)

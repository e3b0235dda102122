"""onnxruntime sessions: threads, graph optimization, and the CPU or CUDA provider (never a silent fallback)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import onnxruntime as ort

from mtop_edge.errors import DeviceError, ModelError

DEVICES = ("cpu", "cuda")
OPTIMIZATION = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def providers_for(device: str) -> list[str]:
    """The provider list for a device.

    Raises:
        DeviceError: CUDA asked for but this onnxruntime build has no CUDA provider.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(
            f"--device cuda: this onnxruntime {ort.__version__} build has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu in place of onnxruntime"
        )
    _preload_cuda_libraries()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* Python packages (as PyTorch ships them) when they are installed.

    onnxruntime-gpu finds them by itself only on the system library path; ``preload_dlls`` is its
    documented way to use the pip-installed ones. Nothing happens where they are absent.
    """
    if hasattr(ort, "preload_dlls"):
        # absent packages or another layout: the provider then reports what it misses when a session starts
        with contextlib.suppress(Exception):
            ort.preload_dlls()


_pool: dict[str, int] = {}


def share_thread_pool(threads: int | None = None) -> bool:
    """From now on, every CPU session of this process runs on one shared pool of ``threads`` threads.

    By default each session gets its own spinning pool, and a parser's sessions (the encoder and
    one or two decoders), which run one after another, steal the cores from each other.
    onnxruntime allows this once per process and then requires it of *every* session, other
    libraries' too, so it is a choice for processes that run only mtop-edge sessions: the CLI's
    parse, serve and evaluate call it. Returns False where the pool exists already (sized elsewhere).
    """
    if "threads" in _pool:
        return _pool["threads"] == (threads or 0)
    try:
        ort.set_global_thread_pool_sizes(threads or 0, 1)  # 0: one thread per core
    except Exception:  # created already, by code outside mtop-edge: its size stands
        _pool["threads"] = -1
        return False
    _pool["threads"] = threads or 0
    return True


def create_session(
    path: Path, *, device: str = "cpu", threads: int | None = None, optimization: str = "all"
) -> ort.InferenceSession:
    """One session for one graph file.

    Raises:
        ModelError: the file is missing or not a loadable ONNX graph (named in the message).
        DeviceError: CUDA was asked for and the session did not get it.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if device == "cpu" and "threads" in _pool:  # sized once by share_thread_pool
        options.use_per_session_threads = False
    else:
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
    providers = providers_for(device)
    if not Path(path).is_file():
        raise ModelError(f"{path}: missing model file")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load ONNX graph ({message})") from None
    if session.get_providers()[0] != providers[0]:
        raise DeviceError(
            f"--device {device}: onnxruntime did not enable {providers[0]} for {path.name} "
            f"(got {', '.join(session.get_providers())}); check the CUDA and cuDNN libraries it needs"
        )
    return session

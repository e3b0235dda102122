"""onnxruntime sessions: threads, the CPU or CUDA provider (never a silent fallback), the shared pool."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from mtop_edge.choices import DEVICES, Device
from mtop_edge.errors import DeviceError, ModelError


@dataclass(frozen=True)
class ThreadPool:
    """onnxruntime's one process-wide CPU thread pool (`share_thread_pool`): sessions given it run on it.

    ``threads`` is its size (None: one thread per core, or sized by code outside mtop-edge when
    ``created`` is False)."""

    threads: int | None
    created: bool


def share_thread_pool(threads: int | None = None) -> ThreadPool:
    """Create the process's shared pool of ``threads`` threads; pass the result to `Parser.load`.

    By default each session gets its own spinning pool, and a parser's sessions (the encoder and
    one or two decoders), which run one after another, steal the cores from each other.
    onnxruntime allows one shared pool per process and then requires it of *every* session, other
    libraries' too, so it is a choice for processes that run only mtop-edge sessions: the CLI's
    parse, serve and evaluate make it. Where a pool exists already its size stands (``created`` False).
    """
    try:
        ort.set_global_thread_pool_sizes(threads or 0, 1)  # 0: one thread per core
    except Exception:  # created already (by an earlier call, or code outside mtop-edge)
        return ThreadPool(None, created=False)
    return ThreadPool(threads, created=True)


def providers_for(device: str) -> list[str]:
    """The provider list for a device.

    Raises:
        DeviceError: an unknown device, or CUDA asked for but this onnxruntime build has no CUDA provider.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == Device.CPU:
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


@dataclass(frozen=True)
class SessionFactory:
    """Makes every session of one parser alike: device, threads, and the shared pool if there is one."""

    device: str = Device.CPU.value
    threads: int | None = None
    pool: ThreadPool | None = None

    def create(self, path: Path) -> ort.InferenceSession:
        """One session for one graph file.

        Raises:
            ModelError: the file is missing or not a loadable ONNX graph (named in the message).
            DeviceError: CUDA was asked for and the session did not get it.
        """
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if self.device == Device.CPU and self.pool is not None:
            options.use_per_session_threads = False
        else:
            options.inter_op_num_threads = 1
            if self.threads:
                options.intra_op_num_threads = self.threads
        providers = providers_for(self.device)
        if not Path(path).is_file():
            raise ModelError(f"{path}: missing model file")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "global thread pool" in message:
                raise ModelError(
                    f"{path}: this process has a shared onnxruntime thread pool; pass the ThreadPool that "
                    "share_thread_pool() returned to Parser.load(pool=...)"
                ) from None
            raise ModelError(f"{path}: cannot load ONNX graph ({message})") from None
        if session.get_providers()[0] != providers[0]:
            raise DeviceError(
                f"--device {self.device}: onnxruntime did not enable {providers[0]} for {Path(path).name} "
                f"(got {', '.join(session.get_providers())}); check the CUDA and cuDNN libraries it needs"
            )
        return session

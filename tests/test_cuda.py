"""CUDA: clear errors without a CUDA build; parity with the CPU where onnxruntime-gpu and a GPU exist."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from mtop_edge.errors import DeviceError
from mtop_edge.runtime import Parser

from .conftest import SAMPLES, export_tiny
from .conftest import parse_command as run

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROWS = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def test_cuda_without_a_cuda_build_is_a_clear_error(tiny_export):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the error path cannot be reached")
    with pytest.raises(DeviceError, match="has no CUDA provider"):
        Parser.load(tiny_export[0], device="cuda")
    result = run("--model", str(tiny_export[0]), "--device", "cuda", "call mom")
    assert result.exit_code == 1 and "onnxruntime-gpu" in result.output


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_cuda_runtime_matches_cpu(tiny_export_fp32):
    utterances = [row["utterance"] for row in EVAL_ROWS[:64]]
    cpu = Parser.load(tiny_export_fp32[0], constraints="none")
    cuda = Parser.load(tiny_export_fp32[0], constraints="none", device="cuda")
    assert cuda.decoder.encoder.get_providers()[0] == "CUDAExecutionProvider"
    assert [r.logical_form for r in cuda.parse_batch(utterances, strict=False)] == [
        r.logical_form for r in cpu.parse_batch(utterances, strict=False)
    ]


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_cuda_fp16_export_is_finite_and_agrees_with_fp32(tiny_model, tiny_export_fp32, tmp_path):
    export_tiny(tiny_model, tmp_path / "fp16", quantize="fp16", parity_rows=0)
    utterances = [row["utterance"] for row in EVAL_ROWS[:64]]
    fp32 = Parser.load(tiny_export_fp32[0], constraints="none", device="cuda")
    fp16 = Parser.load(tmp_path / "fp16", constraints="none", device="cuda")
    assert fp16.decoder.step.get_providers()[0] == "CUDAExecutionProvider"
    same = sum(
        a.logical_form == b.logical_form
        for a, b in zip(
            fp16.parse_batch(utterances, strict=False), fp32.parse_batch(utterances, strict=False), strict=True
        )
    )
    assert same / len(utterances) >= 0.9
    constrained = Parser.load(tmp_path / "fp16", device="cuda").parse_batch(utterances, strict=False)
    assert all(r.ok for r in constrained)

#!/usr/bin/env bash
# On the GPU host: keep the onnxruntime-gpu parts this call carried in /tmp/gpu until run.sh.
set -euo pipefail
mkdir -p /tmp/gpu
cp .gpu/ort/part_* /tmp/gpu/
cp .gpu/ort/SHA256SUM /tmp/gpu/ 2>/dev/null || true
ls -la /tmp/gpu

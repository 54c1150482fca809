#!/usr/bin/env bash
# The speed benchmark on one CUDA GPU (H100 / H200), in one call of a few minutes:
#   1. tools/benchmark.py, inference + training step (batch 2), torchvision fp32 vs ours fp32 / optimised fp32 / bf16;
#   2. the same, inference only, with torch.compile on the optimised model's dense parts (bf16);
#   3. training memory of R50-C4 at batch 2 over 200 iterations (full size, 128 RoIs/image).
# Each table (with command, card, torch version, date) is appended to $OUT/benchmarks_gpu.md (when $OUT is set, as on
# the lent device machine, whose working-tree edits do not come back) or else to docs/benchmarks.md.
# Usage: bash scripts/gpu_benchmark.sh            (about 4-6 minutes on an H100)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -n "${OUT:-}" ]]; then md="$OUT/benchmarks_gpu.md"; json="$OUT"; else md="docs/benchmarks.md"; json="/tmp"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
py="${PYTHON:-python3}"
echo "$(date -u +%T) importing torch with $py"
timeout 120 "$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
echo "$(date -u +%T) start"
cfg=configs/coco/faster_rcnn_r50_c4.yaml
timeout 200 "$py" tools/benchmark.py --config "$cfg" --compare torchvision --device cuda --dtype fp32 bf16 \
  --mode both --batch-size 2 --warmup 3 --iters 20 --json "$json/gpu_eager.json" --markdown "$md" \
  || echo "eager benchmark failed" | tee -a "$md"
timeout 200 "$py" tools/benchmark.py --config "$cfg" --compare torchvision --device cuda --dtype bf16 \
  --mode inference --compile --warmup 3 --iters 20 --json "$json/gpu_compile.json" --markdown "$md" \
  || echo "torch.compile run failed or timed out; the eager table above stands" | tee -a "$md"
timeout 100 "$py" tools/benchmark_memory.py --config "$cfg" --device cuda --iters 200 --batch-size 2 | tee -a "$md"

#!/usr/bin/env bash
# The CUDA checks, on one GPU, in a few minutes: the tests marked `cuda` (which must run, not skip),
# the PreAct-ResNet-18 PGD-10 epoch time on CIFAR-shaped data, and the FAAL-AT / PGD-AT step ratio.
#
#   benchmarks/gpu_check.sh                       # prints everything; exit 1 if a check fails
#   benchmarks/gpu_check.sh | tee docs/results/gpu_check.txt
#
# Without a CUDA device it says so and exits 0 (nothing to check).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device; nothing to check"
  exit 0
fi
status=0
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '|',
  torch.cuda.get_device_name(0), '|', torch.cuda.device_count(), 'device(s)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

echo "== tests marked cuda"
RF_CUDA_REQUIRED=1 timeout 300 python -m pytest -q -m cuda -p no:cacheprovider tests/deep/test_cuda.py \
  || status=1

echo "== PreAct-ResNet-18 PGD-10 epoch (50,000 CIFAR-shaped images, batch 128)"
timeout 240 python benchmarks/gpu_epoch.py --images 12800 || status=1

echo "== FAAL-AT / PGD-AT training step (benchmarks/train_step.py)"
timeout 120 python benchmarks/train_step.py --device cuda --rounds 10 --steps 5 || status=1

echo "== gpu_check: $([ $status = 0 ] && echo all passed || echo FAILED)"
exit $status

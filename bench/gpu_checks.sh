#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA device (the figures in the README's
# GPU rows come from it). Uses the machine's python3 with PYTHONPATH; writes logs into ${OUT:-.}.
#   bash bench/gpu_checks.sh
set -uo pipefail
out=${OUT:-runs/gpu_checks}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py=${PYTHON:-python3}
nvidia-smi -L; $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
# 1. the CUDA paths against the naive reference and the CPU path; the device-agnostic model and loss tests on the GPU
TORCH_DEVICE=cuda $py -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_attention.py tests/test_model.py \
    tests/test_losses.py 2>&1 | tee "$out/pytest.log" | tail -4
# 2. attention at the paper's stage shapes: ours vs timm vs the unfold port (fp32, then bf16)
$py bench/attention.py --device cuda --repeats 20 2>&1 | tee "$out/attention_fp32.txt"
$py bench/attention.py --device cuda --bf16 --no-memory --repeats 20 2>&1 | tee "$out/attention_bf16.txt"
# 3. a training step of the paper's model (and its attention kinds) on the GPU
$py bench/train_step.py --preset paper --device cuda --steps 10 --warmup 3 --batch 4 \
    --json "$out/train_step_paper.json" 2>&1 | tee "$out/train_step_paper.txt"
# 4. a real fit on synthetic 256 px data (data loading included): seconds per epoch on the GPU
$py -m haloae.cli synth --out /tmp/synth256 --categories synth_disc --size 256 >/dev/null
/usr/bin/time -v $py -m haloae.cli train --data-root /tmp/synth256 --category synth_disc --preset paper \
    --set model.backbone.weights=random --set train.epochs=2 --set train.steps_per_epoch=50 \
    --out /tmp/fit_paper 2>&1 | grep -E "image_auroc|Elapsed|Maximum resident|Error|error" | tee "$out/fit_paper.txt"
$py -c 'import json; from haloae.checkpoint import read_checkpoint; c=read_checkpoint("/tmp/fit_paper/checkpoint.pt"); print(json.dumps([{k:v for k,v in h.items() if k.startswith("time") or k=="train/loss"} for h in c["history"]]))' | tee -a "$out/fit_paper.txt"

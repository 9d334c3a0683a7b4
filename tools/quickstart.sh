#!/usr/bin/env bash
# README's main job: train FIRM on scikit-learn's digits (digit 0 normal, the other nine
# anomalous; no download), print anomalib's test metrics, export to OpenVINO and score a few
# test images with the exported model. CPU: 2 min 22 s on 2 idle AVX2-only cores (fp32). Validation (the bank
# refit and the threshold) runs at the last epoch only. Usage: bash tools/quickstart.sh [workdir]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workdir="${1:-quickstart_run}"
mkdir -p "$workdir"
cd "$workdir"

model_args=(--model FIRM --model.image_size 16 --model.visualizer false)
anomalib train "${model_args[@]}" \
  --data Digits --data.category 0 --data.train_batch_size 32 \
  --trainer.max_epochs 10 --trainer.check_val_every_n_epoch 10 --seed_everything 0 --logging.log_graph false

checkpoint="$(ls -td results/Firm/Digits/0/v*/weights/lightning/model.ckpt | head -n 1)"
# Dynamic export (no --input_size): the exported model takes the 8 px digits as they are and resizes them.
# It is written beside the checkpoint: <run folder>/weights/openvino/model.xml.
anomalib export "${model_args[@]}" --ckpt_path "$checkpoint" --export_type openvino
python "$here/score_openvino.py" "${checkpoint%/lightning/model.ckpt}/openvino/model.xml" --category 0

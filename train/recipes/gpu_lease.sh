#!/usr/bin/env bash
# One time-limited GPU job for the default model (a lease of minutes, a Colab session, a short SLURM slot):
#   train data on every core -> stage 2 continuations of the shipped default model, side by side on the one GPU,
#   one per learning rate, each fitted to the time left by --max_train_minutes -> each shipped in float16 and
#   packed for transfer.
#
#   bash train/recipes/gpu_lease.sh                                  # 565 s in all, into runs/gpu_lease
#   TOTAL=3600 LRS="1e-4" SEQ=8192 LEAVES=3840 bash train/recipes/gpu_lease.sh
#   WHEELS=.whl W=/tmp/w SPLIT_MB=15 TOTAL=565 bash train/recipes/gpu_lease.sh  # no package registry, 16 MiB files
#
# Two continuations share the GPU because the default model is small: one alone leaves the GPU waiting on kernel
# launches and the data loader. Results: $OUT/ship_lr<LR>/ for each learning rate (float16, the save_pretrained
# layout; train/recipes/ship_default_model.py puts one in the package), or with SPLIT_MB=N that folder as a tar in
# pieces $OUT/ship_lr<LR>.tar.part-* (cat them | tar -x); $OUT/log.txt and $OUT/logs.tgz (each run's training
# log, loss_log.csv and validation_log.csv)
# Rehearsed on the 2-core CPU with tiny settings (LEAVES=16 PHOTO_COPIES=1 SEQ=24 BATCH=1 RES=32 LOADERS=1
# TOTAL=330 END_RESERVE=90); not yet run on a GPU.
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.."
TOTAL=${TOTAL:-565}             # seconds this script may take in all
END_RESERVE=${END_RESERVE:-65}  # final validation, checkpoint, model save, ship, pack
LOAD=${LOAD:-25}                # start-up of a training process before its loop
OUT=${OUT:-runs/gpu_lease}
W=${W:-runs/gpu_lease_work}  # data, runs, checkpoints: not under $OUT, which holds the results alone
SPLIT_MB=${SPLIT_MB:-0}     # > 0: pack each shipped model as a tar in pieces of this many MiB (a file-size limit)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this checkout's package, installed or not
if [ -n "${WHEELS:-}" ]; then  # e.g. diffusers, where the machine's Python lacks it and no registry is reachable
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
CORES=$(nproc)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PYTHON -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'cuda',
torch.cuda.is_available())" || exit 1
since() { echo "[$(($(date +%s) - T0)) s] $*"; }

# Data: dead-leaves stills (seed 1: still k is the recipe's still k) with the 8 train photos mixed in, then
# sequences of a seed no shipped version trained on. Each step is cut at its time limit and the run goes on
# with what was written (each still and sequence is written whole or not at all).
LEAVES=${LEAVES:-1920}
PHOTO_COPIES=${PHOTO_COPIES:-240}
SEQ=${SEQ:-2048}
DATA_SEED=${DATA_SEED:-4}
since "leaves: $LEAVES stills on $CORES workers (at most ${LEAVES_LIMIT:=60} s)"
OMP_NUM_THREADS=1 timeout "$LEAVES_LIMIT" $PYTHON -m pipeline_video_deblur.cli leaves --out "$W/leaves" \
    --count "$LEAVES" --seed 1 --workers "$CORES"
$PYTHON - "$W/leaves" "$W/mix" "$PHOTO_COPIES" <<'PY'
import sys
from pathlib import Path

from pipeline_video_deblur.data.synthetic import TRAIN_PHOTOS, link_photo_mix

stills = len(list(Path(sys.argv[1]).glob("leaves_*.png")))  # as many as the time limit let it draw
copies = max(1, min(int(sys.argv[3]), stills // len(TRAIN_PHOTOS)))  # the photos keep half the backgrounds at most
link_photo_mix(sys.argv[1], sys.argv[2], copies)
print(f"{stills} stills + {len(TRAIN_PHOTOS)} photos x {copies}")
PY
since "synth: $SEQ sequences, seed $DATA_SEED (at most ${SYNTH_LIMIT:=100} s)"
OMP_NUM_THREADS=1 timeout "$SYNTH_LIMIT" $PYTHON -m pipeline_video_deblur.cli synth --out "$W/data" --split train \
    --skip-existing --workers "$CORES" --sequences "$SEQ" --frames 12 --size 128x128 --seed "$DATA_SEED" \
    --photos "$W/mix"
OMP_NUM_THREADS=1 $PYTHON -m pipeline_video_deblur.cli synth --out "$W/data" --split test --skip-existing \
    --sequences 2 --frames 16 --size 128x128 --seed 1
since "data: $(find "$W/data/train" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l) train sequences"

LEFT=$((T0 + TOTAL - $(date +%s) - LOAD - END_RESERVE))
[ "$LEFT" -gt 60 ] || { echo "only $LEFT s left for training: raise TOTAL or lower the data limits" >&2; exit 2; }
MINUTES=$(awk -v s="$LEFT" 'BEGIN { printf "%.2f", s / 60 }')
LRS=${LRS:-1e-4 2.5e-4}
[ -n "${LRS// /}" ] || { echo "LRS is empty: give one learning rate or more" >&2; exit 2; }
# A run still going this late (slow loading, a stalled step) is stopped, so that what finished is shipped in time:
# SIGTERM makes it save a checkpoint and exit without its model.
STOP_AT=$((T0 + TOTAL - 30))
since "training: one run per learning rate ($LRS) side by side, $MINUTES min of loop each"
train_one() {  # lr
    timeout $((STOP_AT - $(date +%s))) $PYTHON train/stage2_finetune.py --train_data_dir "$W/data" \
        --resolution "${RES:-96}" --num_frames 8 --train_batch_size "${BATCH:-16}" --seed 0 \
        --checkpointing_steps 1000 --checkpoints_total_limit 1 --validation_steps 0 --num_validation_clips 1 \
        --validation_inference_steps 10 --report_to none --dataloader_num_workers "${LOADERS:-6}" --allow_tf32 \
        --output_dir "$W/run_lr$1" --pretrained_model_name_or_path pipeline_video_deblur/default_model --residual \
        --use_ema --ema_decay 0.999 --max_train_steps "${STEPS:-20000}" --max_train_minutes "$MINUTES" \
        --learning_rate "$1" --lr_scheduler cosine --lr_warmup_steps 100 --timestep_bias_strategy later \
        --timestep_bias_multiplier 4 > "$W/train_lr$1.log" 2>&1
    echo "run lr$1 exit $?" >> "$W/train_lr$1.log"
}
PIDS=()
for lr in $LRS; do
    train_one "$lr" &
    PIDS+=($!)
done
sleep 60
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
uptime
wait "${PIDS[@]}"  # not a bare `wait`: that would also wait for the log's tee, which ends only with the script
since "trained"

for lr in $LRS; do
    grep -E "ending at step|validation|exit|Error" "$W/train_lr$lr.log" | tail -6
    [ -f "$W/run_lr$lr/model_index.json" ] || continue
    if [ "$SPLIT_MB" -gt 0 ]; then
        $PYTHON train/recipes/ship_default_model.py "$W/run_lr$lr" "$W/ship_lr$lr" --tile-size 128 > /dev/null &&
            tar -C "$W" -cf - "ship_lr$lr" | split -b "${SPLIT_MB}m" - "$OUT/ship_lr$lr.tar.part-"
    else
        $PYTHON train/recipes/ship_default_model.py "$W/run_lr$lr" "$OUT/ship_lr$lr" --tile-size 128 > /dev/null
    fi
done
(cd "$W" && tar -czf - train_*.log run_*/*.csv run_*/*.json) > "$OUT/logs.tgz"
ls -la "$OUT"
since "done"

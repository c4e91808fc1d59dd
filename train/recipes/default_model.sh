#!/usr/bin/env bash
# The embedded default model, end to end, with the project's own tools only (issue 5):
#   synthetic train data -> stage 0 (pixel-shuffle VAE, UNet, CLIP image encoder on sharp clips)
#   -> video-deblur convert -> stage 1 (blur encoder + condition channels) -> stage 2 (whole model)
#   -> pipeline_video_deblur/default_model/
#
#   bash train/recipes/default_model.sh                 # CPU or GPU, whatever accelerate finds
#   WORK=runs/default_model STAGE2_STEPS=20000 bash train/recipes/default_model.sh
#   CONTINUE=1 STAGE2_STEPS=2000 bash train/recipes/default_model.sh   # more stage 2 on the shipped model
#   CONTINUE=1 CONTINUE_FROM=runs/x/continue_abc bash train/recipes/default_model.sh   # from a run not shipped
#   UNET_LAYERS=2 CONTINUE=1 STAGE2_STEPS=2000 bash train/recipes/default_model.sh   # deepen the shipped UNet first
#   TRAIN_LEAVES=120 DATA=runs/data_leaves CONTINUE=1 bash train/recipes/default_model.sh   # on dead-leaves content
#   TRAIN_LEAVES=120 TRAIN_LEAVES_PHOTOS=15 DATA=runs/data_mix CONTINUE=1 bash train/recipes/default_model.sh  # + photos
#   (a continued run restarts the cosine schedule at STAGE2_LR, 1e-4 by default when continuing: a restart at
#   3e-4 set the model back for its first hundreds of steps)
#
# STOP_AFTER=data renders the data (and stills) and stops before training; STOP_AFTER=plan stops before stage 2 (after
# deepening the UNet, with UNET_LAYERS) and prints its run folder; STOP_AFTER=cache stops after making the sampler's
# path (STAGE2_TRAJECTORY_CACHE_CLIPS); SHIP=0 trains but leaves the shipped model as it is.
# AVERAGE_WITH="RUN1 RUN2" ships the uniform average of the new run's weights and those earlier runs' of the same chain
# (ship_default_model.py --average-with: checkpoint averaging); AVERAGE_WEIGHTS="2 1 1" weights that mean, the new
# run's weight first, then one per AVERAGE_WITH folder in order (ship_default_model.py --weights).
# Resumable: every stage resumes from its latest complete checkpoint, and a stage whose final pipeline
# folder exists is skipped, so running the same command again continues where it stopped. Seeds are fixed.
# Sizes were chosen by measurement on the 2-core CPU (see pipeline_video_deblur/default_model/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-runs/default_model}
PATH_CACHE_NAME=
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
# accelerate launch sets OMP_NUM_THREADS=1 unless told otherwise, which left every core but one idle on a CPU:
# measured on the 2-core CPU (stage 2, 25 steps): 2.16 s/step on 1 thread, 1.45 s/step on 2.
TRAIN_THREADS=${TRAIN_THREADS:-$(nproc)}
LAUNCH=${LAUNCH:-"$PYTHON -m accelerate.commands.launch --num_processes 1 --num_machines 1 --dynamo_backend no --num_cpu_threads_per_process $TRAIN_THREADS"}
SEED=${SEED:-0}

# Data: train sequences at 128 x 128 (train photos only) and 2 held-out clips for validation. Many short
# sequences, not few long ones: each sequence is one camera path and blur, and a plain pixel CNN probe (see the
# model card) overfitted 32 of them (test gain +0.15 dB, then -0.6 dB by 4,000 steps) but not 400 (it stayed
# +0.1..+0.25 dB). Rendering costs about 1 s per sequence per core. Versions <= 0.2 used 32 x 24 frames.
TRAIN_SEQUENCES=${TRAIN_SEQUENCES:-512}
TRAIN_FRAMES=${TRAIN_FRAMES:-12}
# DATA_SEED=S: render the train sequences with seed S instead of 1: other motions, blurs and compositions of the
# same stills, none of them a sequence an earlier run (seed 1) trained on (use a new DATA folder).
DATA_SEED=${DATA_SEED:-1}
SYNTH_WORKERS=${SYNTH_WORKERS:-$(nproc)}
# TRAIN_PHOTOS_DIR=folder: render the train sequences from your own stills instead of the bundled train photos
# (video-deblur synth --photos; use a new DATA folder: one folder never mixes the two).
TRAIN_PHOTOS_DIR=${TRAIN_PHOTOS_DIR:-}
# TRAIN_LEAVES=N: draw N dead-leaves stills (video-deblur leaves, seed 1) into $WORK/leaves_N and render the train
# sequences from them. A pixel CNN probe generalised to the test photos about twice as well from 400 sequences of
# 120 such stills as from 400 of the 8 bundled train photos (benchmarks/results/regressor_probe_leaves400.json).
TRAIN_LEAVES=${TRAIN_LEAVES:-0}
# TRAIN_LEAVES_PHOTOS=K (with TRAIN_LEAVES): mix the 8 bundled train photos into the leaves, each K times (links in
# $WORK/leaves_N_photos_K), so that K = N / 8 gives them half the backgrounds. A run on leaves alone drifted in
# colour at the default sampling settings (1.36 % against the 1 % target); the photos keep their palette in view.
TRAIN_LEAVES_PHOTOS=${TRAIN_LEAVES_PHOTOS:-0}
LEAVES_DIR=
if [ "$TRAIN_LEAVES" -gt 0 ]; then
    [ -z "$TRAIN_PHOTOS_DIR" ] || { echo "set TRAIN_LEAVES or TRAIN_PHOTOS_DIR, not both" >&2; exit 2; }
    LEAVES_DIR=$WORK/leaves_$TRAIN_LEAVES
    TRAIN_PHOTOS_DIR=$LEAVES_DIR
    [ "$TRAIN_LEAVES_PHOTOS" -eq 0 ] || TRAIN_PHOTOS_DIR=${LEAVES_DIR}_photos_$TRAIN_LEAVES_PHOTOS
elif [ "$TRAIN_LEAVES_PHOTOS" -gt 0 ]; then
    echo "TRAIN_LEAVES_PHOTOS=$TRAIN_LEAVES_PHOTOS mixes photos into dead-leaves stills; set TRAIN_LEAVES too" >&2
    exit 2
fi
# Model and crops, measured on the 2-core CPU with nothing else running (fwd + bwd + AdamW, batch 2, 8 frames):
#   pixel-shuffle x2, UNet 48/96/96, 64 px crops (32^2 latents)  5.6 M params  5.3 s/step
#   pixel-shuffle x4, UNet 64/128/128, 64 px crops (16^2 latents) 9.7 M params  1.8 s/step   <- chosen
#   pixel-shuffle x4, UNet 64/128/128, 96 px crops (24^2 latents) 9.7 M params  4.3 s/step
#   pixel-shuffle x4, UNet 96/192/192, 64 px crops                21.3 M params 2.9 s/step
# Both VAEs are lossless (ceiling: infinite PSNR); x4 makes the UNet 3x cheaper per pixel and widens its
# receptive field in pixels, which 10-20 px motion blur needs.
VAE_FACTOR=${VAE_FACTOR:-4}
UNET_CHANNELS=${UNET_CHANNELS:-64,128,128}
# UNET_LAYERS=N: layers per UNet block (1 by default). With CONTINUE=1 and more layers than the shipped UNet has, the
# shipped model is first deepened (train/recipes/deepen_unet.py: the added layers start as the identity, so the
# deeper copy deblurs exactly as the shipped one until stage 2 trains them) and the run continues from that copy.
# Measured as above: 14.3 M parameters and 5.1 s/step at 96 px crops with 2 layers, against 9.7 M and 3.2 s with 1
# (both on a host three times slower than the table's).
UNET_LAYERS=${UNET_LAYERS:-}
RESOLUTION=${RESOLUTION:-64}
# NUM_FRAMES: frames per training crop. 8, half the pipeline's default 16-frame window, for speed; 16 trains on the
# window the sampler runs (about twice the step; render the data with TRAIN_FRAMES=16): from 0.34, a 16-frame run
# averaged with 0.34 shrank the 50-step sampler's late loss from 0.148 to 0.127 dB; a 95-minute one lifted one step
# and three steps but lost 0.02 dB at the 50-step default, and a repeat of the first with another seed did not
# shrink that loss (0.161 dB): within what a seed moves (the card's "Sixteen-frame windows").
NUM_FRAMES=${NUM_FRAMES:-8}
BATCH=${BATCH:-2}
# Steps per stage. Stage 2 gets most of the compute: it is the only stage that learns the deblurring map.
STAGE0_STEPS=${STAGE0_STEPS:-150}
STAGE1_STEPS=${STAGE1_STEPS:-150}
STAGE2_STEPS=${STAGE2_STEPS:-2000}  # the shipped model: stopped at 1800 (STAGE2_STEPS=1800 after checkpoint-1800)
# Stage 2's timestep draws (train --timestep_bias_*): 'later' with a multiplier > 1 spends more of the steps on the
# noisiest timesteps, where the model has to deblur rather than denoise (the card's timestep table). A continued
# run uses 'later' x 4 (57 % of the draws at t >= 750), as version 0.4 was trained; a run from scratch draws
# uniformly, as versions <= 0.2 were.
# STAGE2_START_FRACTION=P: stage 2 draws a fraction P of its samples at t = 999 from the start the sampler gives the
# model (noise x the model's noise_scale, with no trace of the target: train --inference_start_fraction), the rest
# from the forward process; 0 (default) draws them all from the forward process, as versions <= 0.21 did.
# STAGE2_TRAJECTORY_FRACTION=Q: a further fraction Q of the samples is drawn where the 50-step sampler's later
# steps are (the model's first estimate from the start, stepped by DDIM straight to a later timestep: train
# --sampler_trajectory_fraction); 0 (default): none. STAGE2_TRAJECTORY_GUIDANCE=G makes that first estimate at CFG G
# (train --sampler_trajectory_guidance_scale; set it to the model's own `guidance_scale`, the scale its default
# setting samples at: 2 up to version 0.35, then model_index.json's); 1 (default): conditional only.
# STAGE2_TRAJECTORY_HOPS=2 makes those inputs from the model's estimate at the sampler's timestep before the one drawn
# (reached from the first estimate; train --sampler_trajectory_hops 2), as the sampler's own later steps make them
# from refined estimates; 1 (default): from the first estimate, as versions <= 0.34 were trained.
# STAGE2_TRAJECTORY_CACHE_CLIPS=N: those draws are put on the sampler's real path instead: the recipe first runs the
# 50-step sampler (at STAGE2_TRAJECTORY_GUIDANCE, from the weights stage 2 starts from) on N training crops of DATA
# and keeps the inputs its later steps give the model (train/cache_sampler_path.py, about 35 s a crop on the
# development machine's 2 cores under bf16), and stage 2 draws from that (train --sampler_trajectory_cache); 0
# (default): from the first estimate, as above. The cache is made once, in files of STAGE2_TRAJECTORY_CACHE_CHUNK crops
# (48 by default) kept beside the run as $OUT.sampler_path_<first crop>.safetensors, so that an interrupted cache
# resumes at the file it stopped in.
# STAGE2_TRAJECTORY_WEIGHT_CAP=G: the v-loss of those draws is scaled by min(1, G x (1 - alpha_t)), so that their
# weight on the clean sample's error (1 / (1 - alpha_t) under the v-loss, about 56 at the sampler's last timestep) is
# at most G (train --sampler_trajectory_weight_cap); its runs share the path cache of the run without it; empty
# (default): the plain v-loss, as versions <= 0.35 were trained.
# STAGE2_TRANSPOSE=1: stage 2 also transposes half its crops (train --augment_transpose), so that the eight flips and
# rotations are all drawn; 0 (default): flips and temporal reversal only, as versions <= 0.25 were trained.
# STAGE2_PRECISION=bf16: stage 2 runs under bf16 autocast (train --mixed_precision bf16; the trained weights, Adam
# and EMA stay float32), and on a CPU with its attention as plain matmuls (train --attention auto): a UNet step 1.3 to
# 1.6 x as fast on the development machine's 2 cores (benchmarks/train_step.py; version 0.27's run made 25.7 steps a
# minute against 0.26's 22.2 in float32); empty (default): accelerate's config, which is float32 on a plain CPU, as
# versions <= 0.26 were trained. Only on a CPU with bf16 units (AVX512-BF16 or AMX): elsewhere torch emulates bf16
# (an AVX2-only CPU took 970 s a crop for the path cache against 60 s in float32) and training warns.
# STAGE2_MINUTES=M: stage 2 fits its steps and cosine to M minutes of its loop (--max_train_minutes), for a session
# or job with a fixed end; STAGE2_STEPS stays the cap.
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-100}
VALIDATE_EVERY=${VALIDATE_EVERY:-0}

DATA=${DATA:-$WORK/data}
COMMON=(
    --train_data_dir "$DATA" --resolution "$RESOLUTION" --num_frames "$NUM_FRAMES" --train_batch_size "$BATCH"
    --seed "$SEED" --checkpointing_steps "$CHECKPOINT_EVERY" --checkpoints_total_limit 2
    --resume_from_checkpoint latest --validation_steps "$VALIDATE_EVERY" --validation_inference_steps 10
    --num_validation_clips 1 --report_to tensorboard --dataloader_num_workers 0
)
done_pipeline() { [ -f "$1/model_index.json" ]; }  # each stage writes model_index.json last

echo "== data"
if [ "$TRAIN_LEAVES" -gt 0 ]; then
    # Still k depends only on the seed and k: a run on more stills links those an earlier run drew (the largest
    # $WORK/leaves_M) instead of drawing them again (11 min for 1,920 of them here).
    REUSE=
    for folder in "$WORK"/leaves_[0-9]*; do
        count=${folder##*/leaves_}
        case $count in *[!0-9]*) continue ;; esac
        [ "$folder" != "$LEAVES_DIR" ] && [ -f "$folder/leaves.json" ] || continue
        [ -n "$REUSE" ] && [ "$count" -le "${REUSE##*/leaves_}" ] || REUSE=$folder
    done
    OMP_NUM_THREADS=1 $PYTHON -m pipeline_video_deblur.cli leaves --out "$LEAVES_DIR" --count "$TRAIN_LEAVES" \
        --seed 1 --workers "$SYNTH_WORKERS" ${REUSE:+--reuse "$REUSE"}
fi
if [ "$TRAIN_LEAVES_PHOTOS" -gt 0 ]; then
    # Links, not copies: synth resolves them, so each photo appears K times among the backgrounds. A rerun keeps the
    # links already there.
    $PYTHON - "$LEAVES_DIR" "$TRAIN_PHOTOS_DIR" "$TRAIN_LEAVES_PHOTOS" <<'PY'
import sys
from pipeline_video_deblur.data.synthetic import link_photo_mix
link_photo_mix(sys.argv[1], sys.argv[2], int(sys.argv[3]))
PY
fi
# --skip-existing: an interrupted run keeps the sequences already written (each is complete or absent) and
# refuses a folder written with other settings rather than mixing them.
OMP_NUM_THREADS=1 $PYTHON -m pipeline_video_deblur.cli synth --out "$DATA" --split train --skip-existing \
    --workers "$SYNTH_WORKERS" --sequences "$TRAIN_SEQUENCES" --frames "$TRAIN_FRAMES" --size 128x128 \
    --seed "$DATA_SEED" ${TRAIN_PHOTOS_DIR:+--photos "$TRAIN_PHOTOS_DIR"}
OMP_NUM_THREADS=1 $PYTHON -m pipeline_video_deblur.cli synth --out "$DATA" --split test --skip-existing \
    --sequences 2 --frames 16 --size 128x128 --seed 1
[ "${STOP_AFTER:-}" != data ] || { echo "== stopped after the data (STOP_AFTER=data)"; exit 0; }

if [ "${CONTINUE:-0}" = "1" ]; then
    # Continue stage 2 from the shipped default model, or from CONTINUE_FROM (a finished run's folder, such as a
    # probe that was not shipped); each run adds STAGE2_STEPS. The run folder is named after the starting weights,
    # so an interrupted run resumes and a finished one is not repeated.
    START=${CONTINUE_FROM:-pipeline_video_deblur/default_model}
    if ! done_pipeline "$START" || [ ! -f "$START/unet/diffusion_pytorch_model.safetensors" ]; then
        echo "CONTINUE_FROM=$START: expected a finished pipeline folder (model_index.json and" \
            "unet/diffusion_pytorch_model.safetensors), such as a run's output_dir after its last step" >&2
        exit 2
    fi
    STAGE2_LR=${STAGE2_LR:-1e-4}
    STAGE2_TIMESTEP_BIAS=${STAGE2_TIMESTEP_BIAS:-later}
    STAGE2_TIMESTEP_BIAS_MULTIPLIER=${STAGE2_TIMESTEP_BIAS_MULTIPLIER:-4}
    OUT=$WORK/continue_$(sha256sum "$START/unet/diffusion_pytorch_model.safetensors" | cut -c1-12)
    SHIPPED_LAYERS=$($PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["layers_per_block"])' \
        "$START/unet/config.json")
    if [ -n "$UNET_LAYERS" ] && [ "$UNET_LAYERS" != "$SHIPPED_LAYERS" ]; then
        [ "$UNET_LAYERS" -gt "$SHIPPED_LAYERS" ] || {
            echo "UNET_LAYERS=$UNET_LAYERS: the shipped UNet has $SHIPPED_LAYERS layers per block; a continued run can" \
                "only add layers" >&2
            exit 2
        }
        DEEP=$WORK/deepened_${OUT##*/continue_}_layers$UNET_LAYERS
        [ "$SEED" = 0 ] || DEEP=${DEEP}_seed$SEED  # the added layers' inner weights are drawn with SEED
        if ! done_pipeline "$DEEP"; then
            echo "== deepen the shipped UNet: $SHIPPED_LAYERS -> $UNET_LAYERS layers per block"
            $PYTHON train/recipes/deepen_unet.py "$START" "$DEEP" --layers-per-block "$UNET_LAYERS" --seed "$SEED"
        fi
        START=$DEEP
        OUT=${OUT}_layers$UNET_LAYERS
    fi
    # Each training setting that is not the recipe's default is added to the name, so that a run from the same
    # weights with other settings gets a folder of its own instead of resuming this one (with the defaults, the
    # name is the weights' alone, as it was before the settings were added).
    [ "$RESOLUTION" = 64 ] || OUT=${OUT}_crop$RESOLUTION
    [ "$NUM_FRAMES" = 8 ] || OUT=${OUT}_frames$NUM_FRAMES
    [ "$BATCH" = 2 ] || OUT=${OUT}_batch$BATCH
    [ "$STAGE2_LR" = 1e-4 ] || OUT=${OUT}_lr$STAGE2_LR
    [ "$STAGE2_TIMESTEP_BIAS $STAGE2_TIMESTEP_BIAS_MULTIPLIER" = "later 4" ] ||
        OUT=${OUT}_bias${STAGE2_TIMESTEP_BIAS}x$STAGE2_TIMESTEP_BIAS_MULTIPLIER
    [ "${STAGE2_START_FRACTION:-0}" = 0 ] || OUT=${OUT}_start$STAGE2_START_FRACTION
    [ "${STAGE2_TRAJECTORY_FRACTION:-0}" = 0 ] || OUT=${OUT}_traj$STAGE2_TRAJECTORY_FRACTION
    # (the estimate's CFG matters only where there are trajectory draws)
    [ "${STAGE2_TRAJECTORY_FRACTION:-0}" = 0 ] || [ "${STAGE2_TRAJECTORY_GUIDANCE:-1}" = 1 ] ||
        OUT=${OUT}_cfg$STAGE2_TRAJECTORY_GUIDANCE
    [ "${STAGE2_TRAJECTORY_FRACTION:-0}" = 0 ] || [ "${STAGE2_TRAJECTORY_HOPS:-1}" = 1 ] ||
        OUT=${OUT}_hops$STAGE2_TRAJECTORY_HOPS
    [ "${STAGE2_TRAJECTORY_FRACTION:-0}" = 0 ] || [ "${STAGE2_TRAJECTORY_CACHE_CLIPS:-0}" = 0 ] ||
        OUT=${OUT}_path$STAGE2_TRAJECTORY_CACHE_CLIPS
    [ "${STAGE2_TRANSPOSE:-0}" = 0 ] || OUT=${OUT}_transpose
    [ -z "${STAGE2_PRECISION:-}" ] || OUT=${OUT}_$STAGE2_PRECISION
    # The cap changes the loss only, not the path its draws come from: a run with it shares the path cache of the
    # same run without it.
    PATH_CACHE_NAME=$OUT
    [ "${STAGE2_TRAJECTORY_FRACTION:-0}" = 0 ] || [ -z "${STAGE2_TRAJECTORY_WEIGHT_CAP:-}" ] ||
        OUT=${OUT}_cap$STAGE2_TRAJECTORY_WEIGHT_CAP
else
    echo "== stage 0: pretrain a small T2V stand-in on sharp clips"
    # $WORK/t2v is not named after its sizes, and the later stages build on whatever it holds: one begun (or
    # finished) at other sizes is refused by name rather than resumed or silently reused.
    if [ -f "$WORK/t2v/stage0_pretrain_args.json" ]; then
        $PYTHON - "$WORK/t2v" "$VAE_FACTOR" "$UNET_CHANNELS" "${UNET_LAYERS:-1}" <<'PY' || exit 2
import json, os, sys
run, factor, channels, layers = sys.argv[1:]
made = json.load(open(os.path.join(run, "stage0_pretrain_args.json")))
settings = {
    "VAE_FACTOR": (factor, str(made["vae_factor"])),
    "UNET_CHANNELS": (channels.replace(" ", ""), ",".join(str(c) for c in made["unet_block_out_channels"])),
    "UNET_LAYERS": (layers, str(made["unet_layers_per_block"])),
}
wrong = [f"{name}={had} (asked for {name}={asked})" for name, (asked, had) in settings.items() if asked != had]
if wrong:
    sys.exit(f"{run} was made with {', '.join(wrong)}: run with the settings it was made with, or use another WORK")
PY
    fi
    if ! done_pipeline "$WORK/t2v"; then
        $LAUNCH train/stage0_pretrain.py "${COMMON[@]}" --output_dir "$WORK/t2v" \
            --vae_type pixel_shuffle --vae_factor "$VAE_FACTOR" --unet_block_out_channels "$UNET_CHANNELS" \
            --unet_layers_per_block "${UNET_LAYERS:-1}" --unet_attention_head_dim 16 --cross_attention_dim 64 --clip_hidden_size 64 --clip_layers 2 \
            --clip_heads 4 --clip_image_size 64 --clip_patch_size 16 \
            --max_train_steps "$STAGE0_STEPS" --learning_rate 3e-4 --lr_scheduler constant_with_warmup \
            --lr_warmup_steps 50
    fi

    echo "== convert"
    if ! done_pipeline "$WORK/converted"; then
        $PYTHON -m pipeline_video_deblur.cli convert --t2v "$WORK/t2v" --clip "$WORK/t2v/image_encoder" \
            --residual -o "$WORK/converted"
    fi

    echo "== stage 1: blur encoder + condition channels"
    if ! done_pipeline "$WORK/stage1"; then
        $LAUNCH train/stage1_blur_encoder.py "${COMMON[@]}" --output_dir "$WORK/stage1" \
            --pretrained_model_name_or_path "$WORK/converted" --residual --latent_scaling_factor auto \
            --max_train_steps "$STAGE1_STEPS" --learning_rate 1e-3 --lr_scheduler constant_with_warmup \
            --lr_warmup_steps 50
    fi
    START=$WORK/stage1
    STAGE2_LR=${STAGE2_LR:-3e-4}
    STAGE2_TIMESTEP_BIAS=${STAGE2_TIMESTEP_BIAS:-none}
    STAGE2_TIMESTEP_BIAS_MULTIPLIER=${STAGE2_TIMESTEP_BIAS_MULTIPLIER:-1}
    OUT=$WORK/stage2
fi

# The data folder is not in the name: an unfinished run is resumed only on the data it started on.
if [ -f "$OUT/stage2_finetune_args.json" ] && ! done_pipeline "$OUT"; then
    $PYTHON - "$OUT" "$DATA" <<'PY' || exit 2
import json, os, sys
run, data = sys.argv[1], sys.argv[2]
began = json.load(open(os.path.join(run, "stage2_finetune_args.json")))["train_data_dir"]
if os.path.realpath(began) != os.path.realpath(data):
    sys.exit(f"{run} started on DATA={began}, not DATA={data}: resume it with DATA={began}, or use another WORK")
PY
fi
[ "${STOP_AFTER:-}" != plan ] || { echo "== stopped before stage 2 (STOP_AFTER=plan): $OUT"; exit 0; }

CACHE=()
if [ "${STAGE2_TRAJECTORY_FRACTION:-0}" != 0 ] && [ "${STAGE2_TRAJECTORY_CACHE_CLIPS:-0}" != 0 ]; then
    # Crops FIRST .. FIRST + COUNT - 1 of the seed's sample in each file: the same crops and paths however they are
    # split, so the chunk size is not in the run's name.
    CHUNK=${STAGE2_TRAJECTORY_CACHE_CHUNK:-48}
    [ "$CHUNK" -gt 0 ] 2>/dev/null || {
        echo "STAGE2_TRAJECTORY_CACHE_CHUNK=$CHUNK: expected a whole number of crops per file, at least 1" >&2
        exit 2
    }
    FIRST=0
    while [ "$FIRST" -lt "$STAGE2_TRAJECTORY_CACHE_CLIPS" ]; do
        COUNT=$((STAGE2_TRAJECTORY_CACHE_CLIPS - FIRST < CHUNK ? STAGE2_TRAJECTORY_CACHE_CLIPS - FIRST : CHUNK))
        FILE=${PATH_CACHE_NAME:-$OUT}.sampler_path_$FIRST.safetensors
        CACHE+=("$FILE")
        if ! done_pipeline "$OUT" && [ ! -f "$FILE" ]; then
            echo "== the sampler's path on training crops $FIRST to $((FIRST + COUNT - 1))" \
                "(of $STAGE2_TRAJECTORY_CACHE_CLIPS)"
            $PYTHON train/cache_sampler_path.py --pretrained_model_name_or_path "$START" --train_data_dir "$DATA" \
                --resolution "$RESOLUTION" --num_frames "$NUM_FRAMES" --first_clip "$FIRST" --num_clips "$COUNT" \
                --seed "$SEED" --guidance_scale "${STAGE2_TRAJECTORY_GUIDANCE:-1}" \
                --mixed_precision "$([ "${STAGE2_PRECISION:-}" = bf16 ] && echo bf16 || echo no)" \
                $([ "${STAGE2_TRANSPOSE:-0}" = 0 ] || echo --augment_transpose) --output "$FILE"
        fi
        FIRST=$((FIRST + COUNT))
    done
    CACHE=(--sampler_trajectory_cache "${CACHE[@]}")
fi
[ "${STOP_AFTER:-}" != cache ] || {
    echo "== stopped after the sampler's path (STOP_AFTER=cache): ${CACHE[*]:1}"
    exit 0
}

echo "== stage 2: the whole model"
if ! done_pipeline "$OUT"; then
    $LAUNCH train/stage2_finetune.py "${COMMON[@]}" --output_dir "$OUT" \
        --pretrained_model_name_or_path "$START" --residual --use_ema --ema_decay 0.999 \
        --max_train_steps "$STAGE2_STEPS" --learning_rate "$STAGE2_LR" --lr_scheduler cosine --lr_warmup_steps 50 \
        --timestep_bias_strategy "$STAGE2_TIMESTEP_BIAS" --timestep_bias_multiplier "$STAGE2_TIMESTEP_BIAS_MULTIPLIER" \
        --inference_start_fraction "${STAGE2_START_FRACTION:-0}" \
        --sampler_trajectory_fraction "${STAGE2_TRAJECTORY_FRACTION:-0}" \
        --sampler_trajectory_guidance_scale "${STAGE2_TRAJECTORY_GUIDANCE:-1}" \
        --sampler_trajectory_hops "${STAGE2_TRAJECTORY_HOPS:-1}" "${CACHE[@]}" \
        ${STAGE2_MINUTES:+--max_train_minutes "$STAGE2_MINUTES"} \
        ${STAGE2_TRAJECTORY_WEIGHT_CAP:+--sampler_trajectory_weight_cap "$STAGE2_TRAJECTORY_WEIGHT_CAP"} \
        $([ "${STAGE2_TRANSPOSE:-0}" = 0 ] || echo --augment_transpose) \
        ${STAGE2_PRECISION:+--mixed_precision "$STAGE2_PRECISION"}
fi

# Default tile: the whole 128 px benchmark frame (measured better and faster than tiles of the 64 px training crop).
# The model it replaces is kept in $WORK, named after its UNet's weights (a rerun does not copy it twice).
SHIPPED=pipeline_video_deblur/default_model
REPLACED=
[ ! -f "$SHIPPED/unet/diffusion_pytorch_model.safetensors" ] ||
    REPLACED=$WORK/replaced_default_model_$(sha256sum "$SHIPPED/unet/diffusion_pytorch_model.safetensors" | cut -c1-12)
# SHIP=0: stop here, leaving the finished run in $OUT for measurement (a probe) instead of replacing the shipped model;
# it prints the command that ships it later, as this step would.
if [ "${SHIP:-1}" = 0 ]; then
    echo "== not shipped (SHIP=0): $OUT"
    MEAN="${AVERAGE_WITH:+ --average-with $AVERAGE_WITH}${AVERAGE_WEIGHTS:+ --weights $AVERAGE_WEIGHTS}"
    echo "to ship it: $PYTHON train/recipes/ship_default_model.py $OUT $SHIPPED --tile-size ${TILE_SIZE:-128}" \
        "${REPLACED:+--keep-replaced $REPLACED}$MEAN"
    exit 0
fi
echo "== ship"
# shellcheck disable=SC2086  # AVERAGE_WITH and AVERAGE_WEIGHTS are space-separated lists
$PYTHON train/recipes/ship_default_model.py "$OUT" "$SHIPPED" --tile-size "${TILE_SIZE:-128}" \
    ${REPLACED:+--keep-replaced "$REPLACED"} ${AVERAGE_WITH:+--average-with $AVERAGE_WITH} \
    ${AVERAGE_WEIGHTS:+--weights $AVERAGE_WEIGHTS}

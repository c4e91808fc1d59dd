"""The default-model recipe's data step, run for real (`STOP_AFTER=data`): dead-leaves stills mixed with the bundled
train photos (`TRAIN_LEAVES_PHOTOS`), stills reused by a run on more of them, and the clear refusal of a mix without
leaves; the continued run's plan (`STOP_AFTER=plan`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "train" / "recipes" / "default_model.sh"


def _recipe(work: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "WORK": str(work), "STOP_AFTER": "data"}
    env.update(settings)
    return subprocess.run(["bash", str(RECIPE)], capture_output=True, text=True, env=env, timeout=600)


def test_leaves_mixed_with_the_train_photos(tmp_path):
    from pipeline_video_deblur.data.synthetic import TRAIN_PHOTOS, photo_path

    settings = {"TRAIN_LEAVES": "2", "TRAIN_LEAVES_PHOTOS": "2", "TRAIN_SEQUENCES": "3", "TRAIN_FRAMES": "2"}
    done = _recipe(tmp_path, **settings, SYNTH_WORKERS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped after the data" in done.stdout

    mix = tmp_path / "leaves_2_photos_2"
    stills = sorted(p.name for p in mix.iterdir())
    assert stills[:2] == ["leaves_00000.png", "leaves_00001.png"]
    assert len(stills) == 2 + 2 * len(TRAIN_PHOTOS)
    # Each bundled photo twice, as links to scikit-image's file; the leaves link to the drawn stills.
    for name in TRAIN_PHOTOS:
        for k in range(2):
            link = mix / f"photo_{name}_{k:02d}{photo_path(name).suffix}"
            assert link.is_symlink() and link.resolve() == photo_path(name).resolve()
    assert (mix / "leaves_00000.png").resolve() == (tmp_path / "leaves_2" / "leaves_00000.png").resolve()

    # The train sequences were rendered from the mix (and the validation clips from the test photos).
    train = sorted((tmp_path / "data" / "train").iterdir())
    assert len(train) == 3 and len(list((tmp_path / "data" / "test").iterdir())) == 2
    meta = json.loads((train[0] / "meta.json").read_text())
    assert meta["photos_dir"] == str(mix.resolve())
    assert meta["photos"].count("astronaut.png") == 2 and "leaves_00001.png" in meta["photos"]

    # Running it again resumes: nothing is redrawn, and the links are not duplicated.
    again = _recipe(tmp_path, **settings, SYNTH_WORKERS="1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in mix.iterdir()) == stills

    # A run on more stills links the two already drawn and draws only the third.
    more = _recipe(tmp_path, TRAIN_LEAVES="3", TRAIN_SEQUENCES="1", TRAIN_FRAMES="2", DATA=str(tmp_path / "data3"))
    assert more.returncode == 0, more.stderr[-3000:]
    drawn = sorted((tmp_path / "leaves_3").glob("leaves_*.png"))
    assert [p.name for p in drawn] == ["leaves_00000.png", "leaves_00001.png", "leaves_00002.png"]
    assert [p.stat().st_ino for p in drawn[:2]] == [(tmp_path / "leaves_2" / p.name).stat().st_ino for p in drawn[:2]]


def test_photos_without_leaves_is_refused(tmp_path):
    done = _recipe(tmp_path, TRAIN_LEAVES_PHOTOS="3")
    assert done.returncode == 2
    assert "TRAIN_LEAVES_PHOTOS=3" in done.stderr and "set TRAIN_LEAVES too" in done.stderr
    assert not (tmp_path / "data").exists()


def test_a_continued_run_is_named_after_its_settings_and_kept_to_its_data(tmp_path):
    """`CONTINUE=1 STOP_AFTER=plan` prints the stage 2 run folder: the shipped weights' hash, plus each setting that
    is not the recipe's default; an unfinished run is not resumed on other data."""
    import hashlib

    weights = REPO / "pipeline_video_deblur" / "default_model" / "unet" / "diffusion_pytorch_model.safetensors"
    run = tmp_path / f"continue_{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
    plan = {"CONTINUE": "1", "STOP_AFTER": "plan", "TRAIN_SEQUENCES": "1", "TRAIN_FRAMES": "2", "SYNTH_WORKERS": "1"}

    default = _recipe(tmp_path, **plan)
    assert default.returncode == 0, default.stderr[-3000:]
    assert f"(STOP_AFTER=plan): {run}\n" in default.stdout
    other = _recipe(
        tmp_path,
        **plan,
        RESOLUTION="96",
        BATCH="4",
        STAGE2_LR="5e-5",
        STAGE2_TIMESTEP_BIAS="none",
        STAGE2_START_FRACTION="0.5",
        STAGE2_TRAJECTORY_FRACTION="0.25",
        STAGE2_TRAJECTORY_GUIDANCE="2",
        STAGE2_TRAJECTORY_HOPS="2",
        STAGE2_TRANSPOSE="1",
        STAGE2_PRECISION="bf16",
        STAGE2_TRAJECTORY_WEIGHT_CAP="5",
    )
    assert other.returncode == 0, other.stderr[-3000:]
    name = "_crop96_batch4_lr5e-5_biasnonex4_start0.5_traj0.25_cfg2_hops2_transpose_bf16_cap5"
    assert f"(STOP_AFTER=plan): {run}{name}\n" in other.stdout
    # On the sampler's cached path (STAGE2_TRAJECTORY_CACHE_CLIPS): a run of its own, whose cache the plan does not make.
    cached = _recipe(
        tmp_path,
        **plan,
        STAGE2_TRAJECTORY_FRACTION="0.25",
        STAGE2_TRAJECTORY_GUIDANCE="2",
        STAGE2_TRAJECTORY_CACHE_CLIPS="48",
    )
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert f"(STOP_AFTER=plan): {run}_traj0.25_cfg2_path48\n" in cached.stdout
    assert not list(tmp_path.glob("*.sampler_path*.safetensors"))

    # An unfinished run (its arguments written, no final pipeline) that began on other data is refused by name.
    run.mkdir()
    (run / "stage2_finetune_args.json").write_text(json.dumps({"train_data_dir": str(tmp_path / "other_data")}))
    refused = _recipe(tmp_path, **plan)
    assert refused.returncode == 2
    assert f"started on DATA={tmp_path / 'other_data'}, not DATA={tmp_path / 'data'}" in refused.stderr
    (run / "stage2_finetune_args.json").write_text(json.dumps({"train_data_dir": str(tmp_path / "data")}))
    resumed = _recipe(tmp_path, **plan)
    assert resumed.returncode == 0 and f"(STOP_AFTER=plan): {run}\n" in resumed.stdout


def test_a_run_continues_from_an_unshipped_folder_and_refuses_one_that_is_not_a_pipeline(tmp_path):
    """`CONTINUE_FROM=FOLDER` continues a finished run that was not shipped (a probe): the run folder is named after
    that folder's UNet weights; a folder without a finished pipeline in it is refused by name."""
    import hashlib

    probe = tmp_path / "probe"
    (probe / "unet").mkdir(parents=True)
    (probe / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not the shipped weights")
    (probe / "unet" / "config.json").write_text(json.dumps({"layers_per_block": 2}))
    (probe / "model_index.json").write_text("{}")
    digest = hashlib.sha256(b"not the shipped weights").hexdigest()[:12]
    plan = {"CONTINUE": "1", "STOP_AFTER": "plan", "TRAIN_SEQUENCES": "1", "TRAIN_FRAMES": "2", "SYNTH_WORKERS": "1"}

    done = _recipe(tmp_path, **plan, CONTINUE_FROM=str(probe))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(STOP_AFTER=plan): {tmp_path / f'continue_{digest}'}\n" in done.stdout

    (probe / "model_index.json").unlink()  # an unfinished run: its last step not yet saved
    unfinished = _recipe(tmp_path, **plan, CONTINUE_FROM=str(probe))
    assert unfinished.returncode == 2
    assert f"CONTINUE_FROM={probe}: expected a finished pipeline folder" in unfinished.stderr
    assert "stopped before stage 2" not in unfinished.stdout


def test_a_finished_run_is_not_trained_again_and_ship_0_prints_the_averaging_ship_command(tmp_path):
    """A run folder that holds a finished pipeline skips stage 2; with `SHIP=0` the recipe prints the command that
    ships it, `AVERAGE_WITH`'s folders passed on as `--average-with` and `AVERAGE_WEIGHTS` as `--weights`."""
    import hashlib

    probe = tmp_path / "probe"
    (probe / "unet").mkdir(parents=True)
    (probe / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"an earlier run")
    (probe / "unet" / "config.json").write_text(json.dumps({"layers_per_block": 2}))
    (probe / "model_index.json").write_text("{}")
    run = tmp_path / f"continue_{hashlib.sha256(b'an earlier run').hexdigest()[:12]}"
    run.mkdir()
    (run / "model_index.json").write_text("{}")  # finished: stage 2 has nothing left to do
    env = {
        "CONTINUE": "1",
        "TRAIN_SEQUENCES": "1",
        "TRAIN_FRAMES": "2",
        "SYNTH_WORKERS": "1",
        "SHIP": "0",
        "STOP_AFTER": "",
    }
    earlier = f"{tmp_path}/a {tmp_path}/b"
    done = _recipe(tmp_path, **env, CONTINUE_FROM=str(probe), AVERAGE_WITH=earlier)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"== not shipped (SHIP=0): {run}\n" in done.stdout
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("to ship it:")]
    assert f"ship_default_model.py {run} pipeline_video_deblur/default_model --tile-size 128" in line
    assert line.endswith(f" --average-with {earlier}")
    weighted = _recipe(tmp_path, **env, CONTINUE_FROM=str(probe), AVERAGE_WITH=earlier, AVERAGE_WEIGHTS="2 1 1")
    assert weighted.returncode == 0, weighted.stderr[-3000:]
    assert f" --average-with {earlier} --weights 2 1 1\n" in weighted.stdout
    plain = _recipe(tmp_path, **env, CONTINUE_FROM=str(probe))
    assert plain.returncode == 0 and "--average-with" not in plain.stdout


def test_data_seed_renders_other_train_sequences(tmp_path):
    done = _recipe(tmp_path, TRAIN_SEQUENCES="1", TRAIN_FRAMES="2", DATA_SEED="2", SYNTH_WORKERS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    (train,) = (tmp_path / "data" / "train").iterdir()
    assert json.loads((train / "meta.json").read_text())["seed"] == 2
    # The validation clips stay those of seed 1, whatever the train data's seed.
    assert {
        json.loads((clip / "meta.json").read_text())["seed"] for clip in (tmp_path / "data" / "test").iterdir()
    } == {1}


def test_gpu_lease_renders_its_data_then_refuses_a_budget_too_short_to_train(tmp_path):
    """train/recipes/gpu_lease.sh up to its training step (which needs minutes: rehearsed by hand, see its header):
    the stills and the photo mix, the train sequences of its seed, the validation clips, and a clear stop when the
    time left could not train."""
    env = {
        **os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "W": str(tmp_path / "w"),
        "LEAVES": "2", "PHOTO_COPIES": "5", "SEQ": "3", "TOTAL": "30",
    }  # fmt: skip
    done = subprocess.run(
        ["bash", str(REPO / "train" / "recipes" / "gpu_lease.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "data: 3 train sequences" in log and "s left for training: raise TOTAL" in log
    mix = sorted(p.name for p in (tmp_path / "w" / "mix").iterdir())
    assert mix[:2] == ["leaves_00000.png", "leaves_00001.png"] and len(mix) == 2 + 8  # photos capped at the stills
    meta = json.loads((tmp_path / "w" / "data" / "train" / "synth_train_000" / "meta.json").read_text())
    assert meta["seed"] == 4 and meta["photos_dir"] == str((tmp_path / "w" / "mix").resolve())
    assert len(list((tmp_path / "w" / "data" / "test").iterdir())) == 2


def test_a_continued_run_with_more_layers_starts_from_a_deepened_copy(tmp_path):
    """`UNET_LAYERS=2 CONTINUE=1` deepens the shipped UNet into the work folder (once) and names the run after it;
    the shipped layer count is the same run as no setting; fewer layers are refused."""
    import hashlib

    weights = REPO / "pipeline_video_deblur" / "default_model" / "unet" / "diffusion_pytorch_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    shipped = json.loads((weights.parent / "config.json").read_text())["layers_per_block"]
    plan = {"CONTINUE": "1", "STOP_AFTER": "plan", "TRAIN_SEQUENCES": "1", "TRAIN_FRAMES": "2", "SYNTH_WORKERS": "1"}

    deeper = _recipe(tmp_path, **plan, UNET_LAYERS=str(shipped + 1))
    assert deeper.returncode == 0, deeper.stderr[-3000:]
    assert f"(STOP_AFTER=plan): {tmp_path / f'continue_{digest}_layers{shipped + 1}'}\n" in deeper.stdout
    copy = tmp_path / f"deepened_{digest}_layers{shipped + 1}"
    assert json.loads((copy / "unet" / "config.json").read_text())["layers_per_block"] == shipped + 1
    written = (copy / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = _recipe(tmp_path, **plan, UNET_LAYERS=str(shipped + 1))
    assert again.returncode == 0 and "== deepen" not in again.stdout
    assert (copy / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == written

    same = _recipe(tmp_path, **plan, UNET_LAYERS=str(shipped))
    assert same.returncode == 0 and f"(STOP_AFTER=plan): {tmp_path / f'continue_{digest}'}\n" in same.stdout
    fewer = _recipe(tmp_path, **plan, UNET_LAYERS=str(shipped - 1))
    assert fewer.returncode == 2 and f"UNET_LAYERS={shipped - 1}" in fewer.stderr
    assert "can only add layers" in fewer.stderr


def test_a_stand_in_made_at_other_sizes_is_refused_by_name(tmp_path):
    """From scratch, `$WORK/t2v` (stage 0's folder, not named after its sizes) that was begun at other sizes is
    refused before any stage builds on it; one at the asked sizes passes on to stage 0."""
    t2v = tmp_path / "t2v"
    t2v.mkdir()
    made = {"vae_factor": 4, "unet_block_out_channels": [32, 64, 64], "unet_layers_per_block": 1}
    (t2v / "stage0_pretrain_args.json").write_text(json.dumps(made))
    plan = {"STOP_AFTER": "plan", "TRAIN_SEQUENCES": "1", "TRAIN_FRAMES": "2", "SYNTH_WORKERS": "1"}

    refused = _recipe(tmp_path, **plan, UNET_LAYERS="2")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"{t2v} was made with UNET_CHANNELS=32,64,64 (asked for UNET_CHANNELS=64,128,128)" in refused.stderr
    assert "UNET_LAYERS=1 (asked for UNET_LAYERS=2)" in refused.stderr and "VAE_FACTOR" not in refused.stderr
    assert "== stage 0" in refused.stdout and "== convert" not in refused.stdout
    assert sorted(p.name for p in t2v.iterdir()) == ["stage0_pretrain_args.json"]  # nothing of it touched

    # At the sizes it was made with, the check passes and the finished stages are reused as they are.
    for stage in ("t2v", "converted", "stage1"):
        (tmp_path / stage).mkdir(exist_ok=True)
        (tmp_path / stage / "model_index.json").write_text("{}")
    same = _recipe(tmp_path, **plan, UNET_CHANNELS="32,64,64")
    assert same.returncode == 0, same.stderr[-3000:]
    assert f"(STOP_AFTER=plan): {tmp_path / 'stage2'}\n" in same.stdout


def test_ship_0_leaves_a_finished_run_unshipped(tmp_path):
    """`SHIP=0` (a probe): a run whose stage 2 has finished stops before the ship step, naming its folder, and the
    shipped model's files are not touched."""
    import hashlib

    shipped = REPO / "pipeline_video_deblur" / "default_model"
    weights = shipped / "unet" / "diffusion_pytorch_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    before = {p: p.stat().st_mtime_ns for p in shipped.rglob("*") if p.is_file()}
    run = tmp_path / f"continue_{digest}"
    run.mkdir()
    (run / "model_index.json").write_text("{}")  # stage 2 finished: the recipe skips it
    settings = {"CONTINUE": "1", "STOP_AFTER": "", "SHIP": "0", "TRAIN_SEQUENCES": "1", "TRAIN_FRAMES": "2"}

    done = _recipe(tmp_path, **settings, SYNTH_WORKERS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"== not shipped (SHIP=0): {run}\n" in done.stdout
    replaced = tmp_path / f"replaced_default_model_{digest}"
    ship = f"train/recipes/ship_default_model.py {run} pipeline_video_deblur/default_model --tile-size 128"
    assert f"{ship} --keep-replaced {replaced}\n" in done.stdout  # what the ship step would have run
    assert "== ship\n" not in done.stdout
    assert {p: p.stat().st_mtime_ns for p in shipped.rglob("*") if p.is_file()} == before

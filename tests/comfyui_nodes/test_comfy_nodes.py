"""The ComfyUI nodes, imported the way ComfyUI imports a custom-node folder, run on a tiny saved pipeline.

ComfyUI is not installed here: where a test needs it, a stand-in `comfy` package (a `ProgressBar` that records
its updates, a `model_management` whose interrupt check can raise) is put on `sys.modules`.
"""

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_components, tiny_pipeline, tiny_video

from pipeline_video_deblur import VideoDeblurPipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / "examples" / "comfyui"
NODE_NAMES = ("VideoDeblurLoader", "VideoDeblur")

# Input names of ComfyUI's core video nodes (comfy_extras/nodes_video.py), which the workflows use.
CORE_INPUTS = {
    "LoadVideo": {"file"},
    "GetVideoComponents": {"video"},
    "CreateVideo": {"images", "fps", "audio"},
    "SaveVideo": {"video", "filename_prefix", "format", "codec"},
}


def import_like_comfyui(folder: Path) -> types.ModuleType:
    """What ComfyUI's `nodes.load_custom_node` does with a folder: its `__init__.py`, under the folder's path."""
    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """The repository, cloned (here: linked) into custom_nodes/ under a name that is no Python identifier."""
    folder = tmp_path_factory.mktemp("ComfyUI") / "custom_nodes" / "video-deblur"
    folder.parent.mkdir()
    folder.symlink_to(REPO_ROOT, target_is_directory=True)
    module = import_like_comfyui(folder)
    yield module
    for key in [k for k in sys.modules if k == module.__name__ or k.startswith(module.__name__ + ".")]:
        del sys.modules[key]


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-video-deblur"
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def api_workflow() -> dict:
    return json.loads((WORKFLOWS / "video_deblur_api.json").read_text())


@pytest.fixture(scope="module")
def loaded(nodes, saved_pipeline):
    return nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]().load(str(saved_pipeline), "float32", "cpu")[0]


def blurred_images(frames: int = 4, size: int = 32) -> torch.Tensor:
    """A ComfyUI IMAGE batch: (F, H, W, 3) float32 in [0, 1]."""
    return tiny_video(frames, size, size).permute(0, 2, 3, 1).contiguous()


def node_inputs(node_class) -> dict:
    spec = node_class.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def install_comfy(monkeypatch, interrupt_after_updates: int | None = None) -> types.SimpleNamespace:
    """A stand-in `comfy` package on `sys.modules`; returns what it recorded."""
    seen = types.SimpleNamespace(totals=[], updates=[], checks=0, emptied=0, freed=[])

    class InterruptProcessingException(Exception):
        pass

    class ProgressBar:
        def __init__(self, total, node_id=None):
            seen.totals.append(total)

        def update(self, value):
            seen.updates.append(value)

    def throw_exception_if_processing_interrupted():
        seen.checks += 1
        if interrupt_after_updates is not None and len(seen.updates) >= interrupt_after_updates:
            raise InterruptProcessingException()

    def soft_empty_cache(force=False):
        seen.emptied += 1

    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = soft_empty_cache
    mm.free_memory = lambda memory_required, device, keep_loaded=(): seen.freed.append((memory_required, device))
    mm.should_use_bf16 = lambda device=None, **kwargs: False
    mm.should_use_fp16 = lambda device=None, **kwargs: False
    mm.minimum_inference_memory = lambda: 800 * 2**20
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.model_management, comfy.utils = mm, utils
    for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    seen.InterruptProcessingException = InterruptProcessingException
    return seen


# ---------------------------------------------------------------------------------------------------------------
# Registration and widgets


def test_comfyui_finds_both_nodes(nodes):
    assert set(NODE_NAMES) <= set(nodes.NODE_CLASS_MAPPINGS)
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
    loader, deblur = (nodes.NODE_CLASS_MAPPINGS[name] for name in NODE_NAMES)
    assert loader.RETURN_TYPES == ("VIDEO_DEBLUR_PIPELINE",)
    assert deblur.RETURN_TYPES == ("IMAGE",)
    assert node_inputs(deblur)["pipeline"][0] == "VIDEO_DEBLUR_PIPELINE"
    assert node_inputs(deblur)["images"][0] == "IMAGE"
    for node_class in (loader, deblur):
        assert node_class.CATEGORY == "video/restoration"
        assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES)
        function = getattr(node_class, node_class.FUNCTION)
        parameters = list(inspect.signature(function).parameters)[1:]
        assert parameters == list(node_inputs(node_class))  # ComfyUI passes inputs by name


@pytest.mark.parametrize("name", NODE_NAMES)
def test_every_input_has_a_tooltip_and_defaults_within_bounds(nodes, name):
    for input_name, (kind, options) in node_inputs(nodes.NODE_CLASS_MAPPINGS[name]).items():
        assert isinstance(options.get("tooltip"), str) and len(options["tooltip"]) > 20, input_name
        if kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], input_name
            assert isinstance(options["default"], int if kind == "INT" else float), input_name
        elif isinstance(kind, list):
            assert options["default"] in kind, input_name


# ---------------------------------------------------------------------------------------------------------------
# The example workflows


def test_api_workflow_uses_real_node_and_input_names(nodes, api_workflow):
    for node_id, node in api_workflow.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in CORE_INPUTS:
            assert set(inputs) == CORE_INPUTS[kind], node_id
            continue
        assert kind in NODE_NAMES, node_id
        spec = node_inputs(nodes.NODE_CLASS_MAPPINGS[kind])
        assert set(inputs) == set(spec), node_id
        for input_name, value in inputs.items():
            kind_of_input, options = spec[input_name]
            if isinstance(value, list):  # a link: [node id, output slot]
                assert value[0] in api_workflow and isinstance(value[1], int)
            elif isinstance(kind_of_input, list):
                assert value in kind_of_input
            elif kind_of_input in ("INT", "FLOAT"):
                assert options["min"] <= value <= options["max"]
    kinds = {node["class_type"] for node in api_workflow.values()}
    assert kinds == set(CORE_INPUTS) | set(NODE_NAMES)


def test_ui_workflow_is_the_same_graph(nodes, api_workflow):
    ui = json.loads((WORKFLOWS / "video_deblur.json").read_text())
    by_id = {str(node["id"]): node for node in ui["nodes"]}
    assert {k: n["type"] for k, n in by_id.items()} == {k: n["class_type"] for k, n in api_workflow.items()}
    for link_id, origin, origin_slot, target, target_slot, kind in ui["links"]:
        target_input = by_id[str(target)]["inputs"][target_slot]
        assert target_input["link"] == link_id and target_input["type"] == kind
        assert link_id in by_id[str(origin)]["outputs"][origin_slot]["links"]
        assert api_workflow[str(target)]["inputs"][target_input["name"]] == [str(origin), origin_slot]
    for name in NODE_NAMES:
        node_id = next(k for k, n in api_workflow.items() if n["class_type"] == name)
        inputs = node_inputs(nodes.NODE_CLASS_MAPPINGS[name])
        widgets = [k for k in inputs if not isinstance(api_workflow[node_id]["inputs"][k], list)]
        stored, values = list(by_id[node_id]["widgets_values"]), {}
        for k in widgets:  # the UI maps stored values to widgets by position
            if not stored:  # saved before this optional input was added: the UI keeps the widget's default
                assert k in nodes.NODE_CLASS_MAPPINGS[name].INPUT_TYPES().get("optional", {}), k
                values[k] = inputs[k][1]["default"]
                continue
            values[k] = stored.pop(0)
            if inputs[k][1].get("control_after_generate"):  # followed by its "control after generate" value
                assert stored.pop(0) in ("fixed", "increment", "decrement", "randomize"), k
        assert not stored
        assert values == {k: api_workflow[node_id]["inputs"][k] for k in widgets}


# ---------------------------------------------------------------------------------------------------------------
# Running the nodes


def run_api_workflow(nodes, api_workflow, saved_pipeline, images, **overrides):
    """Run the workflow's two nodes through their FUNCTION with the workflow's widget values."""
    loader_class, deblur_class = (nodes.NODE_CLASS_MAPPINGS[name] for name in NODE_NAMES)
    by_kind = {node["class_type"]: node["inputs"] for node in api_workflow.values()}
    loader_args = {**by_kind["VideoDeblurLoader"], "model": str(saved_pipeline)}  # "default" is not shipped yet
    (pipeline,) = getattr(loader_class(), loader_class.FUNCTION)(**loader_args)
    links = {"pipeline": pipeline, "images": images}
    deblur_args = {k: links.get(k, v) for k, v in by_kind["VideoDeblur"].items()}
    deblur_args.update(steps=2, **overrides)  # the workflow's 50 steps, cut for a CPU test
    return pipeline, getattr(deblur_class(), deblur_class.FUNCTION)(**deblur_args)


def test_api_workflow_runs_without_comfyui(nodes, api_workflow, saved_pipeline):
    assert importlib.util.find_spec("comfy") is None
    images = blurred_images(frames=4, size=24)
    pipeline, (result,) = run_api_workflow(nodes, api_workflow, saved_pipeline, images)
    assert pipeline.pipeline.unet.dtype == torch.float32  # dtype "auto" on the CPU
    assert result.shape == images.shape and result.dtype == torch.float32
    assert bool(torch.isfinite(result).all()) and 0 <= float(result.min()) and float(result.max()) <= 1


def test_progress_counts_frames_times_steps(nodes, loaded, monkeypatch):
    seen = install_comfy(monkeypatch)
    images = blurred_images(frames=3, size=16)
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]()
    (result,) = deblur.deblur(loaded, images, 4, 1.0, 0.5, 2, 1, 0, 7)  # 2 windows of 2 frames, 4 x 0.5 steps
    assert result.shape == images.shape
    assert seen.totals == [2 * 3] and seen.updates == [3, 3]  # frames x steps
    assert seen.checks == 1 + 2  # once before the run, once after every step
    assert seen.emptied == 1


def test_cancel_stops_the_run_between_steps(nodes, loaded, monkeypatch):
    seen = install_comfy(monkeypatch, interrupt_after_updates=3)  # cancel pressed during the third step
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]()
    with pytest.raises(seen.InterruptProcessingException):
        deblur.deblur(loaded, blurred_images(frames=2, size=16), 6, 1.0, 1.0, 16, 4, 0, 0)
    assert seen.totals == [6 * 2] and seen.updates == [2, 2, 2]
    assert seen.emptied == 1  # the weights went back to the offload device all the same


def test_long_clips_are_deblurred_segment_by_segment(nodes, loaded, monkeypatch):
    """`segment_frames`: the node's passes are deblur_segments' (float, unrounded), the bar spans them all, and the
    memory asked of ComfyUI is one segment's; 0 is one pass over the whole clip, as a direct pipeline call."""
    from pipeline_video_deblur.segments import deblur_segments

    seen = install_comfy(monkeypatch)
    runtime = importlib.import_module(nodes.__name__ + ".comfy_nodes.runtime")
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]()
    images = blurred_images(frames=12, size=16)
    pipe = loaded.pipeline
    options = {"num_inference_steps": 2, "guidance_scale": 1.0, "strength": 1.0, "tile_size": None}
    asked, move = [], runtime.move_to_run_device  # what the node asks ComfyUI to free (nothing on the CPU)
    monkeypatch.setattr(runtime, "move_to_run_device", lambda loaded, memory: (asked.append(memory), move(loaded))[1])

    # 12 frames in segments of 4 sharing 1: [0, 4), [3, 7), and the last 6 left in one pass, [6, 12)
    (result,) = deblur.deblur(loaded, images, 2, 1.0, 1.0, 2, 1, 0, 5, 0.5, 4)
    assert seen.totals == [2 * (4 + 4 + 6)] and seen.updates == [4, 4, 4, 4, 6, 6]
    assert asked == [runtime.run_memory(pipe, 6, 16, 16, 2, None)]
    frames = images.numpy()
    expected = deblur_segments(
        pipe, frames, segment_frames=4, frame_overlap=1, num_frames=2, as_uint8=False, noise_scale=0.5,
        generator=torch.Generator().manual_seed(5), **options,
    )  # fmt: skip
    torch.testing.assert_close(result, torch.from_numpy(np.stack(list(expected))), rtol=0, atol=1e-6)

    (whole,) = deblur.deblur(loaded, images, 2, 1.0, 1.0, 2, 1, 0, 5, 0.5, 0)
    assert seen.updates[6:] == [12, 12]
    direct = pipe(
        images.permute(0, 3, 1, 2), num_frames=2, frame_overlap=1, noise_scale=0.5, output_type="pt",
        generator=torch.Generator().manual_seed(5), **options,
    ).frames[0]  # fmt: skip
    torch.testing.assert_close(whole, direct.permute(0, 2, 3, 1), rtol=0, atol=1e-6)
    assert not torch.allclose(whole, result, atol=1e-4)  # the segments saw other noise and other neighbours

    with pytest.raises(ValueError, match=r"`segment_frames` must be 0 \(the whole clip at once\) or at least "
                       r"num_frames=2 \(one temporal window\), got 1"):  # fmt: skip
        deblur.deblur(loaded, images, 2, 1.0, 1.0, 2, 1, 0, 5, 0.5, 1)


def test_self_ensemble_input_reaches_the_pipeline_and_the_bar(nodes, loaded, monkeypatch):
    """An optional combo (old workflows load with "1"): "4" gives deblur_segments' self_ensemble=4 result, and the
    bar counts the four runs of every step; a value outside the combo is refused with the value."""
    from pipeline_video_deblur.segments import deblur_segments

    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]
    spec = deblur.INPUT_TYPES()
    assert "self_ensemble" not in spec["required"]
    from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES

    assert spec["optional"]["self_ensemble"][0] == [str(size) for size in SELF_ENSEMBLE_SIZES]
    assert spec["optional"]["self_ensemble"][1]["default"] == "1"
    seen = install_comfy(monkeypatch)
    images = blurred_images(frames=3, size=16)
    (result,) = deblur().deblur(loaded, images, 2, 1.0, 1.0, 16, 4, 0, 3, 0.5, 64, "4")
    assert seen.totals == [2 * 3 * 4] and seen.updates == [3] * (2 * 4)
    expected = deblur_segments(
        loaded.pipeline, images.numpy(), num_frames=16, frame_overlap=4, as_uint8=False, num_inference_steps=2,
        guidance_scale=1.0, noise_scale=0.5, self_ensemble=4, generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    torch.testing.assert_close(result, torch.from_numpy(np.stack(list(expected))), rtol=0, atol=1e-6)
    (single,) = deblur().deblur(loaded, images, 2, 1.0, 1.0, 16, 4, 0, 3, 0.5, 64)
    assert not torch.allclose(single, result, atol=1e-4)
    with pytest.raises(ValueError, match=r"`self_ensemble` must be one of \['1', '2', '4', '8'\], got '3'"):
        deblur().deblur(loaded, images, 2, 1.0, 1.0, 16, 4, 0, 3, 0.5, 64, "3")


def test_noise_scale_input_defaults_to_the_models_own(nodes):
    """-1 is the widget's stand-in for "the model's config.noise_scale"; optional, so old workflows still load."""
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]
    spec = deblur.INPUT_TYPES()
    assert "noise_scale" not in spec["required"]
    kind, options = spec["optional"]["noise_scale"]
    assert kind == "FLOAT"
    assert {k: options[k] for k in ("default", "min", "max", "step")} == {
        "default": -1.0, "min": -1.0, "max": 2.0, "step": 0.05
    }  # fmt: skip
    assert "-1" in options["tooltip"]
    assert inspect.signature(getattr(deblur, deblur.FUNCTION)).parameters["noise_scale"].default == -1.0


@pytest.fixture(scope="module")
def loaded_quarter_noise(nodes, tmp_path_factory):
    """A tiny pipeline whose config stores noise_scale 0.25, saved and loaded by the loader node."""
    path = tmp_path_factory.mktemp("models") / "tiny-quarter-noise"
    VideoDeblurPipeline(**tiny_components(), noise_scale=0.25).save_pretrained(path)
    return nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]().load(str(path), "float32", "cpu")[0]


def test_noise_scale_reaches_the_pipeline(nodes, loaded_quarter_noise):
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]()
    images = blurred_images(frames=2, size=16)

    def run(seed, *noise_scale):
        return deblur.deblur(loaded_quarter_noise, images, 2, 1.0, 1.0, 16, 4, 0, seed, *noise_scale)[0]

    # 0: no starting noise, and DDIM with eta 0 adds none, so the seed no longer matters
    torch.testing.assert_close(run(0, 0.0), run(1, 0.0), rtol=0, atol=0)
    assert not torch.equal(run(0, 1.0), run(1, 1.0))
    # -1 (and a workflow saved without the input) is the model's own value, whatever that is
    assert loaded_quarter_noise.pipeline.config.noise_scale == 0.25
    model_default = run(0, loaded_quarter_noise.pipeline.config.noise_scale)
    torch.testing.assert_close(run(0, -1.0), model_default, rtol=0, atol=0)
    torch.testing.assert_close(run(0), model_default, rtol=0, atol=0)
    assert not torch.equal(model_default, run(0, 1.0))
    with pytest.raises(ValueError, match=r"`noise_scale` must be a finite number >= 0, got nan"):
        run(0, float("nan"))


def test_guidance_scale_minus_one_is_the_models_own(nodes, tmp_path):
    """The required guidance widget defaults to -1: the model's config.guidance_scale."""
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]
    kind, options = deblur.INPUT_TYPES()["required"]["guidance_scale"]
    assert kind == "FLOAT" and options["default"] == -1.0 and options["min"] == -1.0 and "-1" in options["tooltip"]
    path = tmp_path / "tiny-guidance-3"
    VideoDeblurPipeline(**tiny_components(), guidance_scale=3.0).save_pretrained(path)
    loaded = nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]().load(str(path), "float32", "cpu")[0]
    images = blurred_images(frames=2, size=16)

    def run(guidance_scale):
        return deblur().deblur(loaded, images, 2, guidance_scale, 1.0, 16, 4, 0, 0)[0]

    own = run(-1.0)
    torch.testing.assert_close(own, run(3.0), rtol=0, atol=0)
    assert not torch.equal(own, run(2.0)) and not torch.equal(own, run(1.0))
    with pytest.raises(ValueError, match=r"`guidance_scale` must be a finite number, got nan"):
        run(float("nan"))


def test_loader_follows_comfyui_devices(nodes, saved_pipeline, monkeypatch):
    install_comfy(monkeypatch)
    loader = nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]()
    (pipeline,) = loader.load(str(saved_pipeline), "auto", "auto")
    assert pipeline.device == pipeline.offload_device == torch.device("cpu")
    assert pipeline.pipeline.unet.dtype == torch.float32


def test_a_bare_cuda_choice_names_the_device_comfyui_frees_on(nodes, monkeypatch):
    """ComfyUI's models sit on cuda:N and `free_memory` compares devices with ==; 'cuda' must become cuda:N."""
    install_comfy(monkeypatch)
    runtime = importlib.import_module(nodes.__name__ + ".comfy_nodes.runtime")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: only the naming is checked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert runtime.resolve_device("cuda")[0] == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda:0")[0] == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"`device` 'cuda:2' is not on this machine: it has 2 cuda device\(s\)"):
        runtime.resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"`device` 'cuda' is not available on this machine .*; use 'auto' or 'cpu'"):
        runtime.resolve_device("cuda")


def test_the_memory_asked_of_comfyui_covers_weights_vae_and_a_window(nodes, loaded, monkeypatch):
    runtime = importlib.import_module(nodes.__name__ + ".comfy_nodes.runtime")
    pipe = loaded.pipeline
    weights = sum(p.numel() * p.element_size() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                  for p in m.parameters())  # fmt: skip
    small = runtime.run_memory(pipe, frames=16, height=64, width=64, num_frames=16, tile_size=None)
    large = runtime.run_memory(pipe, frames=16, height=720, width=1280, num_frames=16, tile_size=None)
    assert weights < small < large
    assert large - weights > 8 * 720 * 1280 * 4  # at least one float32 plane per frame of the VAE's chunk
    # The windows and tiles bound the activations, not the clip's latents, which are kept whole: 144 more frames ask
    # for six copies of those frames' latents more, and nothing else.
    long = runtime.run_memory(pipe, frames=160, height=720, width=1280, num_frames=16, tile_size=None)
    factor, element = pipe.vae_scale_factor, next(pipe.unet.parameters()).element_size()
    latents = pipe.unet.config.out_channels * -(-720 // factor) * -(-1280 // factor) * element
    assert long - large == 6 * 144 * latents
    # The stand-in model manager is asked for that plus its own reserve for one inference.
    seen = install_comfy(monkeypatch)
    meta = runtime.LoadedPipeline(tiny_pipeline(), torch.device("meta"), torch.device("cpu"), "tiny")
    runtime.move_to_run_device(meta, small)
    assert seen.freed == [(small + 800 * 2**20, torch.device("meta"))]


def test_pipelines_are_found_in_extra_model_paths_folders(nodes, saved_pipeline, monkeypatch, tmp_path):
    """A stand-in `folder_paths` holding a `video_deblur:` folder from extra_model_paths.yaml, as ComfyUI's
    utils/extra_config.py adds it (before custom nodes load); the node registers models/video_deblur as default."""
    install_comfy(monkeypatch)
    folder_names_and_paths = {}

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        paths, _ = folder_names_and_paths.setdefault(folder_name, ([], set()))
        if full_folder_path in paths:
            paths.remove(full_folder_path)
        paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path / "ComfyUI" / "models")
    folder_paths.add_model_folder_path = add_model_folder_path
    folder_paths.get_folder_paths = lambda name: folder_names_and_paths[name][0][:]
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    shared = saved_pipeline.parent
    add_model_folder_path("video_deblur", str(shared))  # the yaml's entry
    runtime = importlib.import_module(nodes.__name__ + ".comfy_nodes.runtime")
    runtime.register_model_folder()
    assert runtime.comfy_model_folders() == [os.path.join(folder_paths.models_dir, "video_deblur"), str(shared)]
    monkeypatch.chdir(tmp_path)
    (pipeline,) = nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]().load(saved_pipeline.name, "float32", "cpu")
    assert pipeline.model == str(saved_pipeline)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_a_value_error_naming_the_value(nodes, loaded, saved_pipeline, tmp_path):
    deblur = nodes.NODE_CLASS_MAPPINGS["VideoDeblur"]()
    loader = nodes.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]()
    args = (2, 1.0, 1.0, 16, 4, 0, 0)
    with pytest.raises(ValueError, match="empty batch"):
        deblur.deblur(loaded, torch.zeros(0, 32, 32, 3), *args)
    with pytest.raises(ValueError, match="frames of 4 x 6 px are too small"):
        deblur.deblur(loaded, torch.rand(2, 4, 6, 3), *args)
    with pytest.raises(ValueError, match="frame_overlap"):
        deblur.deblur(loaded, blurred_images(2, 16), 2, 1.0, 1.0, 4, 4, 0, 0)
    with pytest.raises(ValueError, match="Load Video Deblur Model"):
        deblur.deblur(loaded.pipeline, blurred_images(2, 16), *args)
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match=str(missing)):
        loader.load(str(missing), "auto", "cpu")
    with pytest.raises(ValueError, match="no model_index.json"):
        loader.load(str(tmp_path), "auto", "cpu")
    with pytest.raises(ValueError, match="'default', a pipeline folder"):
        loader.load("  ", "auto", "cpu")


# ---------------------------------------------------------------------------------------------------------------
# A clone that was never pip-installed


def test_clone_without_pip_install_loads_a_pipeline(saved_pipeline, tmp_path):
    """ComfyUI imports the folder, the package is not installed: the nodes find it next to them."""
    folder = tmp_path / "custom_nodes" / "ComfyUI-Video-Deblur"
    folder.parent.mkdir()
    folder.symlink_to(REPO_ROOT, target_is_directory=True)
    script = textwrap.dedent(
        f"""
        import importlib.util, os, sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]  # hide the editable install
        assert importlib.util.find_spec("pipeline_video_deblur") is None
        folder = {str(folder)!r}
        name = folder.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        (pipeline,) = module.NODE_CLASS_MAPPINGS["VideoDeblurLoader"]().load({str(saved_pipeline)!r}, "auto", "cpu")
        print(type(pipeline.pipeline).__module__, sys.modules["pipeline_video_deblur"].__file__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    module_name, package_file = done.stdout.split()[-2:]
    assert module_name == "pipeline_video_deblur.pipeline_video_deblur"
    assert package_file == str(folder / "pipeline_video_deblur" / "__init__.py")

"""`VideoDeblurLoader`: loads a `VideoDeblurPipeline` once, for any number of `VideoDeblur` nodes."""

from __future__ import annotations

import os
import re

from . import runtime

CATEGORY = "video/restoration"
PIPELINE_TYPE = "VIDEO_DEBLUR_PIPELINE"
# A Hugging Face Hub repository id: "user/name".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(model: str) -> str:
    """`"default"`, an existing pipeline folder (made absolute), or a Hub id; anything else is a `ValueError`.

    A relative folder is looked up from the working directory, then, inside ComfyUI, under
    `ComfyUI/models/video_deblur/` and the `video_deblur:` folders of `extra_model_paths.yaml`.
    """
    name = model.strip() if isinstance(model, str) else model
    if not isinstance(name, str) or not name:
        raise ValueError(f"`model` must be 'default', a pipeline folder or a Hub id (user/name), got {model!r}")
    if name == "default":
        return name
    path = os.path.expanduser(name)
    candidates = [os.path.abspath(path)]
    if not os.path.isabs(path):
        candidates += [os.path.join(folder, path) for folder in runtime.comfy_model_folders()]
    for folder in candidates:
        if os.path.isdir(folder):
            if not os.path.isfile(os.path.join(folder, "model_index.json")):
                raise ValueError(f"`model` folder {folder!r} is not a pipeline: it has no model_index.json")
            return folder
    if HUB_ID.match(name) and not os.path.exists(path):
        return name
    raise ValueError(f"`model` {model!r} does not exist: looked for a pipeline folder at {', '.join(candidates)}")


class VideoDeblurLoader:
    """Loads the deblurring pipeline: the embedded default model, a local folder or a Hugging Face Hub id."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "STRING",
                    {
                        "default": "default",
                        "multiline": False,
                        "tooltip": "'default' for the small model shipped with the package (no download), a "
                        "pipeline folder (absolute, or relative to ComfyUI/models/video_deblur/ or to a "
                        "video_deblur: folder of extra_model_paths.yaml), or a Hugging Face Hub id such as "
                        "user/name.",
                    },
                ),
                "dtype": (
                    ["auto", "float32", "float16", "bfloat16"],
                    {
                        "default": "auto",
                        "tooltip": "Precision of the weights. 'auto' follows ComfyUI: float32 on the CPU, "
                        "bfloat16 or float16 on a GPU.",
                    },
                ),
                "device": (
                    ["auto", "cuda", "cpu", "mps"],
                    {
                        "default": "auto",
                        "tooltip": "Where the model runs. 'auto' is ComfyUI's compute device; between runs the "
                        "weights go back where ComfyUI offloads models.",
                    },
                ),
            }
        }

    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The loaded deblurring pipeline, for the Video Deblur node.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a video deblurring diffusion pipeline (VideoDeblurPipeline) for the Video Deblur node."

    def load(self, model: str, dtype: str, device: str) -> tuple[runtime.LoadedPipeline]:
        source = resolve_model(model)
        run_device, offload_device = runtime.resolve_device(device)
        torch_dtype = runtime.resolve_dtype(dtype, run_device)
        pipeline_class = runtime.pipeline_package().VideoDeblurPipeline
        if source == "default":
            pipe = pipeline_class.from_default(torch_dtype=torch_dtype)
        elif os.path.isdir(source):
            pipe = pipeline_class.from_pretrained(source, torch_dtype=torch_dtype)
        else:
            try:
                pipe = pipeline_class.from_pretrained(source, torch_dtype=torch_dtype)
            except OSError as error:
                raise ValueError(
                    f"`model` {model!r} is no local folder and could not be loaded from the Hugging Face Hub: {error}"
                ) from error
        pipe.to(offload_device)
        return (runtime.LoadedPipeline(pipe, run_device, offload_device, source),)

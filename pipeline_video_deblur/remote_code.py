"""Remote-code layout: a pipeline folder that carries its own code, so that
`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` loads it where this package is not
installed (DESIGN 4, "Loading facts").

diffusers loads custom code from a folder or a Hub repo when `model_index.json` names a module file instead of a
library: `"_class_name": ["pipeline_video_deblur", "VideoDeblurPipeline"]` with `pipeline_video_deblur.py` at the
root (plus the files it imports relatively, beside it), and `"unet": ["unet_3d_deblur", "VideoDeblurUNet3DModel"]`
with `unet_3d_deblur.py` in `unet/` (the same for any other component defined in this package, such as
`PixelShuffleVAE` in `vae/`). `write_remote_code` turns a folder saved by `save_pretrained` into that layout.

The same layout makes stock diffusers run the folder's code even when this package is installed (and refuse
without `trust_remote_code`). `package_layout` undoes that for `VideoDeblurPipeline.from_pretrained`: it gives
a view of the folder whose `model_index.json` names this package's modules again, so the installed classes load
the weights and the folder's code is never run.

Limits of diffusers' loader (0.42) that this module checks: from a local folder it copies only the relative
imports of the pipeline file itself (one level, `from .name import ...`), and every custom module of a local
folder lands in one flat namespace, so module names must not collide.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = __name__.split(".")[0]  # "pipeline_video_deblur"
MODEL_INDEX = "model_index.json"

# Weight files diffusers and transformers may read that are not safetensors (pickles and other formats).
NON_SAFETENSORS_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".msgpack", ".h5", ".onnx", ".onnx_data")

# diffusers' own patterns (dynamic_modules_utils.get_relative_imports): `from . import x` is not seen by them.
_RELATIVE_IMPORT = re.compile(r"^\s*(?:import\s+\.(\S+)\s*$|from\s+\.(\S+)\s+import)", flags=re.MULTILINE)


def relative_imports(module_file: str | os.PathLike) -> list[str]:
    """Module names a file imports relatively (`from .windows import x` -> `windows`), found the way diffusers'
    `get_relative_imports` finds them: by regular expression, including imports inside functions."""
    text = Path(module_file).read_text(encoding="utf-8")
    names = {a or b for a, b in _RELATIVE_IMPORT.findall(text)}
    return sorted(names)


def read_model_index(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MODEL_INDEX
    if not path.is_file():
        raise ValueError(f"{str(folder)!r} is not a pipeline folder: no {MODEL_INDEX}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def is_remote_layout(model_index: dict) -> bool:
    """True when `model_index.json` names a pipeline module file (`"_class_name": [file, class]`)."""
    return isinstance(model_index.get("_class_name"), (list, tuple))


def _components(model_index: dict) -> dict[str, list]:
    return {
        name: value
        for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2
    }


def _module_file(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot find the source file of module {module_name!r}")
    return Path(spec.origin)


def write_remote_code(folder: str | os.PathLike) -> list[str]:
    """Copy the pipeline's code into a folder saved by `VideoDeblurPipeline.save_pretrained` and rewrite its
    `model_index.json` for `trust_remote_code` loading. Component configs need no change (they hold class names
    only). Returns the files written, relative to `folder`.

    Raises:
        ValueError: the folder is not a `VideoDeblurPipeline` folder in the package layout, or the code has an
            import diffusers' loader cannot follow.
    """
    folder = Path(folder)
    index = read_model_index(folder)
    if is_remote_layout(index):
        raise ValueError(f"{str(folder)!r} already has the remote-code layout ({MODEL_INDEX} _class_name is a list)")
    # Not `from .pipeline_video_deblur import ...`: this file may itself travel with the pipeline file (which imports
    # it in `from_pretrained`), and diffusers' loader refuses helpers that import relatively.
    VideoDeblurPipeline = importlib.import_module(PACKAGE).VideoDeblurPipeline

    if index.get("_class_name") != VideoDeblurPipeline.__name__:
        raise ValueError(
            f"{str(folder)!r} holds a {index.get('_class_name')!r}, expected a {VideoDeblurPipeline.__name__} folder"
        )
    written: list[str] = []

    # 1. The pipeline file at the root, with the modules it imports relatively beside it
    pipeline_file = _module_file(VideoDeblurPipeline.__module__)
    pipeline_stem = pipeline_file.stem
    root_modules = {pipeline_stem: pipeline_file}
    for name in relative_imports(pipeline_file):
        if not name or "." in name:
            raise ValueError(
                f"{pipeline_file.name} imports '.{name}'; diffusers' remote-code loader follows only "
                "`from .module import ...` of a module beside the pipeline file"
            )
        root_modules[name] = pipeline_file.parent / f"{name}.py"
    for name, source in root_modules.items():
        if not source.is_file():
            raise ValueError(f"{pipeline_file.name} imports '.{name}' but {source} does not exist")
        if name != pipeline_stem and relative_imports(source):
            raise ValueError(
                f"{source.name} imports {relative_imports(source)} relatively; diffusers copies only the pipeline "
                "file's own relative imports from a local folder, so its helpers must not import relatively"
            )
        shutil.copyfile(source, folder / f"{name}.py")
        written.append(f"{name}.py")

    # 2. Each component defined in this package: its module file in the component's folder
    remote_names = set(root_modules)
    for name, (library, class_name) in _components(index).items():
        if library is None or not (library == PACKAGE or library.startswith(PACKAGE + ".")):
            continue
        source = _module_file(library)
        if relative_imports(source):
            raise ValueError(
                f"{source.name} (component {name!r}) imports {relative_imports(source)} relatively; a component's "
                "remote code must be one file"
            )
        stem = source.stem
        if stem in remote_names:
            raise ValueError(
                f"module name {stem!r} is used twice; diffusers puts the modules of a local folder in one namespace"
            )
        remote_names.add(stem)
        if not (folder / name).is_dir():
            raise ValueError(f"{str(folder)!r} has no folder {name!r} for component {name!r}")
        shutil.copyfile(source, folder / name / f"{stem}.py")
        written.append(f"{name}/{stem}.py")
        index[name] = [stem, class_name]

    # 3. model_index.json names the files instead of the package
    index["_class_name"] = [pipeline_stem, VideoDeblurPipeline.__name__]
    (folder / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(MODEL_INDEX)
    return written


def package_model_index(model_index: dict, folder: str | os.PathLike) -> dict:
    """The `model_index.json` of the package layout for a folder in the remote-code layout: each entry whose code
    the folder ships (`[file, class]` with `file.py` at the root for the pipeline, in the component's folder for a
    component) is mapped back to this package's module defining `class`.

    Raises:
        ValueError: a class the folder ships is not one this package defines.
    """
    if not is_remote_layout(model_index):
        return dict(model_index)
    package = importlib.import_module(PACKAGE)
    folder = Path(folder)
    index = dict(model_index)

    def package_module(stem: str, class_name: str, what: str) -> str:
        class_obj = getattr(package, class_name, None)
        if not isinstance(class_obj, type) or class_obj.__module__.rsplit(".", 1)[-1] != stem:
            raise ValueError(
                f"{what} is {stem}.{class_name}, which {PACKAGE} does not define; load this folder with "
                "`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` instead"
            )
        return class_obj.__module__

    stem, class_name = model_index["_class_name"]
    package_module(stem, class_name, "the pipeline class")
    index["_class_name"] = class_name
    for name, (library, component_class) in _components(model_index).items():
        if isinstance(library, str) and (folder / name / f"{library}.py").is_file():
            index[name] = [package_module(library, component_class, f"component {name!r}"), component_class]
    return index


def _download_kwargs(kwargs: dict) -> dict:
    keys = ("cache_dir", "revision", "token", "local_files_only", "proxies", "force_download")
    return {k: kwargs[k] for k in keys if k in kwargs}


def _hub_folder_if_remote_layout(repo_id: str, **kwargs) -> str | None:
    """Download a Hub repo (safetensors weights, configs and code files, which are not run) when it has the
    remote-code layout; `None` when it has not."""
    from huggingface_hub import hf_hub_download, snapshot_download

    download_kwargs = _download_kwargs(kwargs)
    index_file = hf_hub_download(repo_id, MODEL_INDEX, **download_kwargs)
    if not is_remote_layout(json.loads(Path(index_file).read_text(encoding="utf-8"))):
        return None
    # The .py files come too (they tell which components ship code) but are never imported.
    ignore = [f"*{suffix}" for suffix in NON_SAFETENSORS_WEIGHTS]
    return snapshot_download(repo_id, ignore_patterns=ignore, **download_kwargs)


@contextmanager
def package_layout(pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> Iterator[str | os.PathLike]:
    """Yield what `DiffusionPipeline.from_pretrained` should load so that this package's classes are used.

    A folder or Hub repo in the package layout is yielded unchanged. One in the remote-code layout yields a
    temporary view: links to its files (copies where links are not allowed), without its `.py` files, and a
    `model_index.json` from `package_model_index`. The view is removed on exit; the loaded pipeline keeps no
    reference to it. `kwargs` are `from_pretrained`'s; the Hub download options among them are used.
    """
    source = pretrained_model_name_or_path
    if os.path.isdir(source):
        folder = source
        if not is_remote_layout(read_model_index(folder)):
            yield source
            return
    else:
        folder = _hub_folder_if_remote_layout(str(source), **kwargs)
        if folder is None:
            yield source
            return

    index = package_model_index(read_model_index(folder), folder)
    view = Path(tempfile.mkdtemp(prefix="video-deblur-view-"))
    try:
        for entry in Path(folder).iterdir():
            if entry.name == MODEL_INDEX or entry.suffix == ".py" or entry.name.startswith("."):
                continue
            _link_or_copy(entry.resolve(), view / entry.name, skip_code=True)
        (view / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        yield str(view)
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _link_or_copy(source: Path, target: Path, skip_code: bool) -> None:
    if source.is_dir():
        target.mkdir()
        for entry in source.iterdir():
            if skip_code and entry.suffix == ".py":
                continue
            _link_or_copy(entry.resolve(), target / entry.name, skip_code)
        return
    try:
        target.symlink_to(source)
    except OSError:
        shutil.copyfile(source, target)

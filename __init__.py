"""ComfyUI entry point. ComfyUI imports this folder's `__init__.py` as a package named after the folder (wherever
the repository is cloned under `ComfyUI/custom_nodes/`) and reads `NODE_CLASS_MAPPINGS` from it."""

# Only when imported as a package: pytest may import this file as a plain top-level module (a checkout folder
# whose name is not an identifier), where a relative import cannot work and no nodes are wanted.
if __spec__ is not None and __spec__.submodule_search_locations is not None:
    from .comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

"""LPIPS (AlexNet, v0.1) through the ``lpips`` package, computed only from weights already on disk.

LPIPS needs two sets of weights: its linear layers (inside the ``lpips`` package) and the ImageNet AlexNet
backbone, which torchvision would download into the torch hub cache. Nothing is downloaded here: when either
is missing the metric is reported as not computed, with the reason, never as a number.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .psnr_ssim import to_uint8

NOT_COMPUTED = "not computed"


def alexnet_weights_path() -> Path:
    """Where torchvision keeps the ImageNet AlexNet weights:
    ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``."""
    try:
        from torchvision.models import AlexNet_Weights

        filename = os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)
    except ImportError:
        filename = "alexnet-owt-7be5be79.pth"
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


class LPIPSMetric:
    """LPIPS AlexNet v0.1 (lower is better, 0 for identical frames).

    ``metric.status`` is ``"computed"`` when the model loaded, else ``"not computed: <reason>"``; calling an
    unavailable metric raises ``RuntimeError``.

    Args:
        device: torch device for the network.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = None
        self.status = self._load()

    @property
    def available(self) -> bool:
        return self.model is not None

    def _load(self) -> str:
        try:
            import lpips
        except ImportError:
            return f"{NOT_COMPUTED}: the lpips package is not installed (pip install lpips)"
        linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        if not linear.is_file():
            return f"{NOT_COMPUTED}: lpips linear weights missing at {linear}"
        backbone = alexnet_weights_path()
        if not backbone.is_file():
            return (
                f"{NOT_COMPUTED}: AlexNet backbone weights not found at {backbone} (nothing is downloaded; place "
                f"torchvision's {backbone.name} there)"
            )
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's deprecation notes on lpips' `pretrained=` call
                # pnet_rand=True builds the backbone without weights (no download); they are loaded below.
                model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
            state = torch.load(backbone, map_location="cpu", weights_only=True)
            slices = {idx: name for name, module in model.net.named_children() for idx in module._modules}
            features = {}
            for key, value in state.items():
                if key.startswith("features."):
                    idx, param = key[len("features.") :].split(".", 1)
                    if idx in slices:
                        features[f"{slices[idx]}.{idx}.{param}"] = value
            model.net.load_state_dict(features, strict=True)
        except Exception as error:  # a broken file must not turn into a number
            return f"{NOT_COMPUTED}: loading LPIPS failed ({type(error).__name__}: {error})"
        self.model = model.to(self.device).eval()
        return "computed"

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS between two frames or two stacks: uint8 or float in [0, 1], (H, W, 3) or (F, H, W, 3).

        Frames are rounded to uint8 first (the same protocol as PSNR); a stack gives the mean over frames.
        """
        if self.model is None:
            raise RuntimeError(f"LPIPS is unavailable: {self.status}")
        a, b = to_uint8(a), to_uint8(b)
        if a.shape != b.shape:
            raise ValueError(f"Frames must have the same shape, got {a.shape} and {b.shape}")
        if a.ndim == 3:
            a, b = a[None], b[None]

        def to_tensor(x):  # uint8 (F, H, W, 3) -> float (F, 3, H, W) in [-1, 1]
            return torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0

        values = [float(self.model(to_tensor(a[i : i + 1]), to_tensor(b[i : i + 1])).item()) for i in range(len(a))]
        return float(np.mean(values))

"""Lesion segmentation with a MONAI network whose weights the site supplies (`analysis.model`).

Nothing is shipped or downloaded. The weights file is a torch checkpoint (loaded with
``weights_only=True``, so it cannot run code) holding a dict::

    {"network": "SegResNet" | "DynUNet",      # the MONAI class
     "kwargs": {...},                          # its constructor arguments; in_channels must be 2
     "state_dict": {...},                      # the trained weights
     "roi_size": [96, 96, 96],                 # sliding-window patch (voxels, slice/row/col order)
     "pet_scale": 10.0,                        # channel 0 = SUV / pet_scale
     "ct_window": [-1000.0, 1000.0],           # channel 1 = CT HU clipped to the window, scaled to 0…1
     "name": "…", "version": "…"}              # optional, named in the SEG/SR

The network sees two channels, PET (SUV) and CT resampled onto the PET grid, and is run at the PET's
voxel size with sliding-window inference (Gaussian blending). Class 1 of a multi-class output (or a
sigmoid > 0.5 of a single channel) is lesion.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuropetrix.analysis.errors import AnalysisError

NETWORKS = ("SegResNet", "DynUNet")


@dataclass
class LesionModel:
    """A loaded network with the preprocessing it was trained with."""

    network: Any                 # torch.nn.Module
    roi_size: tuple[int, int, int]
    pet_scale: float
    ct_window: tuple[float, float]
    name: str
    version: str
    path: Path


def load_model(path: Path, device: str) -> LesionModel:
    """Build the MONAI network named in the checkpoint and load its weights; refuse a bad file clearly."""
    import torch
    from monai.networks import nets

    if not path.is_file():
        raise AnalysisError(f"analysis.model: weights file {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises anything from pickle, zip and its own checks
        raise AnalysisError(f"analysis.model: cannot load {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise AnalysisError(f"analysis.model: {path} is not a NeuroPETRIX checkpoint (no 'state_dict')")
    network_name = str(checkpoint.get("network", ""))
    if network_name not in NETWORKS:
        raise AnalysisError(f"analysis.model: network {network_name!r} in {path} is not one of {', '.join(NETWORKS)}")
    kwargs = dict(checkpoint.get("kwargs", {}))
    if int(kwargs.get("in_channels", 0)) != 2:
        raise AnalysisError(f"analysis.model: {path} must take 2 input channels (PET, CT)")
    try:
        network = getattr(nets, network_name)(**kwargs)
        network.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise AnalysisError(f"analysis.model: {path} does not match {network_name}: {exc}") from None
    network.to(device).eval()
    window = checkpoint.get("ct_window", (-1000.0, 1000.0))
    roi = tuple(int(v) for v in checkpoint.get("roi_size", (96, 96, 96)))
    if len(roi) != 3:
        raise AnalysisError(f"analysis.model: roi_size in {path} must have 3 values")
    return LesionModel(network=network, roi_size=roi,  # type: ignore[arg-type]
                       pet_scale=float(checkpoint.get("pet_scale", 10.0)),
                       ct_window=(float(window[0]), float(window[1])),
                       name=str(checkpoint.get("name", f"MONAI {network_name}")),
                       version=str(checkpoint.get("version", "unversioned")), path=path)


def model_inputs(suv: np.ndarray, ct_hu: np.ndarray, model: LesionModel) -> np.ndarray:
    """(2, slices, rows, cols) float32: SUV / pet_scale and the CT window scaled to 0…1."""
    low, high = model.ct_window
    ct = (np.clip(ct_hu, low, high) - low) / (high - low)
    return np.stack([suv / model.pet_scale, ct]).astype(np.float32)


def predict_mask(suv: np.ndarray, ct_hu: np.ndarray, model: LesionModel, device: str) -> np.ndarray:
    """Boolean lesion mask from sliding-window inference over the whole volume."""
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(model_inputs(suv, ct_hu, model))[None].to(device)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        logits = sliding_window_inference(x, roi_size=model.roi_size, sw_batch_size=2,
                                          predictor=model.network, overlap=0.25, mode="gaussian")
    if logits.shape[1] == 1:
        mask = torch.sigmoid(logits[0, 0]) > 0.5
    else:
        mask = torch.argmax(logits[0], dim=0) == 1
    return mask.cpu().numpy()

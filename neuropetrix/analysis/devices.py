"""Where the heavy parts run, chosen once per analysis.

"cpu" or a torch device ("cuda", "cuda:1", or "cpu:0"): where a site model's network runs (MONAI,
`networks.py`). Thresholds, connected components and SUVpeak run with numpy/scipy on any device: scipy
labels a whole-body mask in about 0.4 s, and no measurement has shown that the GPU is needed for them.

torch is imported only when a GPU may be used: importing it costs more than a second, which a
CPU-only node should not pay on every study.
"""
from __future__ import annotations

import glob
import os

from neuropetrix.analysis.errors import AnalysisError

DEVICES = ("auto", "cpu", "cuda")


def _nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def cuda_available() -> bool:
    if not _nvidia_driver_present():
        return False
    import torch
    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    """"auto" → "cuda" when a CUDA device is usable, else "cpu"; "cuda" without one is refused."""
    if requested not in DEVICES:
        raise AnalysisError(f"device {requested!r}: must be one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        raise AnalysisError("device cuda: no usable CUDA device on this machine (use --device cpu or auto)")
    return "cpu"


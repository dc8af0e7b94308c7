"""The network, the one part of the analysis that runs on the analysis device, gives the CPU's answer on
CUDA (skipped without a GPU). Thresholds, components and SUVpeak run with scipy on every device."""
from __future__ import annotations

import numpy as np
import pytest

from neuropetrix.analysis.devices import cuda_available, resolve_device
from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.config.settings import AnalysisSettings


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no CUDA")
def test_cpu_and_gpu_model_inference_agree(volumes, tmp_path):
    torch = pytest.importorskip("torch")
    from monai.networks.nets import SegResNet

    pet, ct = volumes
    kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "init_filters": 4, "blocks_down": (1, 1),
              "blocks_up": (1,), "norm": ("GROUP", {"num_groups": 2})}
    torch.manual_seed(3)
    weights = tmp_path / "w.pt"
    torch.save({"network": "SegResNet", "kwargs": kwargs, "state_dict": SegResNet(**kwargs).state_dict(),
                "roi_size": [48, 48, 48]}, weights)
    settings = AnalysisSettings(method="model", model=weights, min_volume_ml=0)
    cpu = analyze_volumes(pet, ct, settings, "cpu")
    gpu = analyze_volumes(pet, ct, settings, "cuda")
    agree = np.mean((cpu.label_map > 0) == (gpu.label_map > 0))
    assert agree > 0.999          # float rounding may flip voxels whose two logits are nearly equal


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused():
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(AnalysisError, match="no usable CUDA device on this machine"):
        resolve_device("cuda")
    with pytest.raises(AnalysisError, match="must be one of auto, cpu, cuda"):
        resolve_device("tpu")

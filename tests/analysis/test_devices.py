"""The torch path (thresholds, components, SUVpeak convolution, network) gives the CPU path's answers.

It runs on every machine as the torch device "cpu:0" (the same code the GPU runs), and on CUDA when
there is a GPU (skipped otherwise).
"""
from __future__ import annotations

import numpy as np
import pytest

from neuropetrix.analysis.devices import cuda_available
from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.config.settings import AnalysisSettings

TORCH_DEVICES = [pytest.param("cpu:0", id="torch-cpu"),
                 pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu,
                                                        pytest.mark.skipif(not cuda_available(), reason="no CUDA")])]


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("settings", [
    {"method": "fixed", "threshold": 3.0, "min_volume_ml": 0.1},
    {"method": "percent_max", "threshold": 0.41, "min_volume_ml": 0.1},
    {"method": "percist", "min_volume_ml": 0.1},
], ids=["fixed", "percent_max", "percist"])
def test_torch_path_finds_the_same_lesions(settings: dict, device: str, volumes):
    """Label maps identical; SUVmax/mean/volume/TLG/centroid equal (same voxels, same float32 SUV);
    SUVpeak within 1e-5 relative (float32 convolution with torch, float64 with scipy)."""
    pet, _ = volumes
    cpu = analyze_volumes(pet, None, AnalysisSettings(**settings), "cpu")
    other = analyze_volumes(pet, None, AnalysisSettings(**settings), device)
    assert other.device == device and len(cpu.lesions) == len(other.lesions) > 0
    assert np.array_equal(cpu.label_map, other.label_map)
    for a, b in zip(cpu.lesions, other.lesions):
        assert (a.suv_max, a.suv_mean, a.volume_ml, a.tlg, a.centroid_mm) == \
            (b.suv_max, b.suv_mean, b.volume_ml, b.tlg, b.centroid_mm)
        assert b.suv_peak == pytest.approx(a.suv_peak, rel=1e-5)


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

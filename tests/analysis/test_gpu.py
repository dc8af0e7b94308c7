"""The same phantom through the CPU and the GPU path gives the same lesions (needs CUDA)."""
from __future__ import annotations

import numpy as np
import pytest

from neuropetrix.analysis.devices import cuda_available
from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.config.settings import AnalysisSettings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no CUDA device")]


@pytest.mark.parametrize("settings", [
    {"method": "fixed", "threshold": 3.0, "min_volume_ml": 0.1},
    {"method": "percent_max", "threshold": 0.41, "min_volume_ml": 0.1},
    {"method": "percist", "min_volume_ml": 0.1},
], ids=["fixed", "percent_max", "percist"])
def test_cpu_and_gpu_find_the_same_lesions(settings: dict, volumes):
    """Label maps identical; SUVmax/mean/volume/TLG/centroid equal (same voxels, same float32 SUV);
    SUVpeak within 1e-5 relative (float32 convolution on the GPU, float64 on the CPU)."""
    pet, _ = volumes
    cpu = analyze_volumes(pet, None, AnalysisSettings(**settings), "cpu")
    gpu = analyze_volumes(pet, None, AnalysisSettings(**settings), "cuda")
    assert gpu.device == "cuda" and len(cpu.lesions) == len(gpu.lesions) > 0
    assert np.array_equal(cpu.label_map, gpu.label_map)
    for a, b in zip(cpu.lesions, gpu.lesions):
        assert (a.suv_max, a.suv_mean, a.volume_ml, a.tlg, a.centroid_mm) == \
            (b.suv_max, b.suv_mean, b.volume_ml, b.tlg, b.centroid_mm)
        assert b.suv_peak == pytest.approx(a.suv_peak, rel=1e-5)


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

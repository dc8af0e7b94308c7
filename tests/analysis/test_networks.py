"""The MONAI path: site weights loaded from the config's file, sliding-window inference on PET+CT.

No weights are shipped: each test builds a small SegResNet and saves it as a site would.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.networks import load_model, model_inputs
from neuropetrix.analysis.pipeline import analyze_volumes, to_suv
from neuropetrix.analysis.suv import suv_factors
from neuropetrix.analysis.volumes import resample_to
from neuropetrix.config.settings import AnalysisSettings
from tests.analysis.helpers import analyze_dir

torch = pytest.importorskip("torch")
nets = pytest.importorskip("monai.networks.nets")

KWARGS = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "init_filters": 4, "blocks_down": (1, 1),
          "blocks_up": (1,), "norm": ("GROUP", {"num_groups": 2})}


def _save(path: Path, network, roi_size=(48, 48, 48), **extra) -> Path:
    torch.save({"network": "SegResNet", "kwargs": KWARGS, "state_dict": network.state_dict(),
                "roi_size": list(roi_size), "pet_scale": 10.0, "ct_window": [-1000.0, 1000.0],
                "name": "test SegResNet", "version": "0.1", **extra}, path)
    return path


def _network(seed: int = 0):
    torch.manual_seed(seed)
    return nets.SegResNet(**KWARGS)


def test_weights_are_loaded_and_every_window_is_stitched(volumes, tmp_path: Path):
    """A network whose last layer says "lesion" everywhere labels every voxel, across 48³ windows of an
    80³ volume; the same network saying "background" finds nothing."""
    pet, ct = volumes
    for lesion_bias, expected_voxels in ((5.0, pet.data.size), (-5.0, 0)):
        network = _network()
        with torch.no_grad():
            network.conv_final[2].conv.weight.zero_()
            network.conv_final[2].conv.bias.copy_(torch.tensor([0.0, lesion_bias]))
        weights = _save(tmp_path / f"w{lesion_bias}.pt", network)
        result = analyze_volumes(pet, ct, AnalysisSettings(method="model", model=weights, min_volume_ml=0), "cpu")
        assert int(np.count_nonzero(result.label_map)) == expected_voxels
        assert result.segmentation.algorithm_name == "test SegResNet"
        assert result.segmentation.model_file == str(weights)


def test_inference_equals_the_network_applied_to_pet_and_ct(volumes, tmp_path: Path):
    """With one window covering the volume, the label map is the network's own argmax on (SUV/10, CT)."""
    pet, ct = volumes
    network = _network(seed=3)
    weights = _save(tmp_path / "w.pt", network, roi_size=pet.data.shape)
    result = analyze_volumes(pet, ct, AnalysisSettings(method="model", model=weights, min_volume_ml=0), "cpu")
    suv = to_suv(pet, suv_factors(pet, "bw")[1])
    hu = resample_to(ct, pet, fill=-1000.0)
    x = np.stack([suv / 10.0, (np.clip(hu, -1000, 1000) + 1000) / 2000]).astype(np.float32)
    np.testing.assert_allclose(x, model_inputs(suv, hu, load_model(weights, "cpu")))
    with torch.no_grad():
        expected = (network.eval()(torch.from_numpy(x)[None]).argmax(1)[0] == 1).numpy()
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(result.label_map > 0, expected)


def test_bad_weights_and_missing_ct_are_refused(phantom_dir, volumes, tmp_path: Path):
    pet, ct = volumes
    with pytest.raises(AnalysisError, match="does not exist"):
        analyze_volumes(pet, ct, AnalysisSettings(method="model", model=tmp_path / "none.pt"), "cpu")
    one_channel = _save(tmp_path / "one.pt", _network(), kwargs={**KWARGS, "in_channels": 1})
    with pytest.raises(AnalysisError, match="2 input channels"):
        analyze_volumes(pet, ct, AnalysisSettings(method="model", model=one_channel), "cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AnalysisError, match="cannot load"):
        analyze_volumes(pet, ct, AnalysisSettings(method="model", model=tmp_path / "junk.pt"), "cpu")
    with pytest.raises(AnalysisError, match="needs the CT"):
        analyze_dir(phantom_dir(), method="model", model=_save(tmp_path / "ok.pt", _network()))


def _threshold_network(suv_level: float, pet_scale: float):
    """A SegResNet that computes "SUV above `suv_level`" voxel by voxel: the first convolution passes the
    PET channel through (centre tap), the residual blocks add nothing, the batch norms are identities
    and the final 1×1 convolution compares with the level."""
    kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "init_filters": 2, "blocks_down": (1,),
              "blocks_up": (), "norm": "BATCH"}
    network = nets.SegResNet(**kwargs)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)       # (x - 0) / sqrt(var + eps) = x
                module.weight.fill_(1.0)
                module.bias.zero_()
        network.convInit.conv.weight[0, 0, 1, 1, 1] = 1.0        # channel 0 = SUV / pet_scale
        final = network.conv_final[2].conv
        final.weight[1, 0, 0, 0, 0] = pet_scale                  # class 1 logit = SUV - level, class 0 = 0
        final.bias[1] = -suv_level
    return network, kwargs


def test_the_network_path_on_torchs_cpu_device_finds_the_threshold_paths_lesions(volumes, tmp_path: Path):
    """The device path end to end without a GPU: weights loaded onto torch's CPU device, sliding windows
    stitched, components labelled and measured. A network that is a fixed SUV threshold finds the
    lesions the threshold path finds, voxel for voxel, with the same measures."""
    pet, ct = volumes
    network, kwargs = _threshold_network(3.0, 10.0)
    weights = _save(tmp_path / "threshold.pt", network, kwargs=kwargs)
    model = analyze_volumes(pet, ct, AnalysisSettings(method="model", model=weights, min_volume_ml=0.5), "cpu")
    threshold = analyze_volumes(pet, ct, AnalysisSettings(method="fixed", threshold=3.0, min_volume_ml=0.5,
                                                          exclude_physiological=False), "cpu")
    assert model.device == "cpu" and len(threshold.lesions) >= 3
    assert np.array_equal(model.label_map > 0, threshold.label_map > 0)
    key = [(les.voxel_count, round(les.suv_max, 4), round(les.suv_peak, 4)) for les in threshold.lesions]
    assert sorted((les.voxel_count, round(les.suv_max, 4), round(les.suv_peak, 4))
                  for les in model.lesions) == sorted(key)

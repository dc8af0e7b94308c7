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

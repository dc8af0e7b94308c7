"""Radiomics features per lesion with pyradiomics: first order, shape and texture (GLCM, GLRLM, GLSZM).

Features are named as pyradiomics (whose definitions follow the IBSI) names them, without the image
type prefix: ``firstorder_Mean``, ``shape_MeshVolume``, ``glcm_Contrast``, … Grey levels are binned by
a fixed SUV width (IBSI's recommendation for PET), 0.25 SUV unless configured otherwise. A lesion too
small for the texture matrices gets no features (None) rather than the analysis failing.
"""
from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

FEATURE_CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm")
_MIN_VOXELS = 8


def _image(array: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))     # SimpleITK is (x, y, z) = (col, row, slice)
    return image


def lesion_features(suv: np.ndarray, labels: np.ndarray, n: int, spacing: tuple[float, float, float],
                    bin_width: float = 0.25) -> list[dict[str, float] | None]:
    """Features of lesions 1…n (index i is label i + 1); None for lesions under 8 voxels."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(binWidth=bin_width, additionalInfo=False)
    extractor.disableAllFeatures()
    for name in FEATURE_CLASSES:
        extractor.enableFeatureClassByName(name)
    out: list[dict[str, float] | None] = []
    for i, box in enumerate(ndimage.find_objects(labels, max_label=n)):
        if box is None or int(np.count_nonzero(labels[box] == i + 1)) < _MIN_VOXELS:
            out.append(None)
            continue
        crop = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, size)) for b, size in zip(box, suv.shape))
        image = _image(suv[crop].astype(np.float64), spacing)
        mask = _image((labels[crop] == i + 1).astype(np.uint8), spacing)
        features = extractor.execute(image, mask, label=1)
        out.append({key.removeprefix("original_"): float(value) for key, value in features.items()
                    if key.startswith("original_")})
    return out

"""From a DICOM instance's pixel data to the stored training image: one grey channel,
resized to the policy's grid, scaled to [0, 1]. Decides which instances are usable."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixel_data_handlers.util import convert_color_space

from silo_node.datasets.errors import InstanceRejected, MalformedInput
from typing import Any

_COLOUR = {"RGB": None, "YBR_FULL": "YBR_FULL", "YBR_FULL_422": "YBR_FULL_422"}
_LUMA = np.array([0.299, 0.587, 0.114])


def resize_nearest(image: NDArray[Any], size: int) -> NDArray[Any]:
    """Nearest-neighbour resampling to size x size (numpy only; enough for a small CNN)."""
    rows = np.linspace(0, image.shape[0] - 1, size).round().astype(int)
    cols = np.linspace(0, image.shape[1] - 1, size).round().astype(int)
    resized: NDArray[Any] = image[np.ix_(rows, cols)]
    return resized


def training_image(ds: Dataset, size: int, file: str) -> NDArray[Any]:
    """float32 [size, size] in [0, 1], or InstanceRejected with a reason code."""
    if "PixelData" not in ds:
        raise InstanceRejected("has no pixel data (not an image)", file=file, code="NO_PIXEL_DATA")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise MalformedInput("NumberOfFrames is not a number", file=file, tag="(0028,0008)", code="MALFORMED_DICOM") from None
    if frames > 1:
        raise InstanceRejected(f"has {frames} frames; only single-frame images are used", file=file, code="MULTI_FRAME")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", *_COLOUR):
        raise InstanceRejected(f"photometric interpretation {photometric or 'missing'} is not supported",
                               file=file, code="PHOTOMETRIC_UNSUPPORTED")
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64) if photometric not in _COLOUR or _COLOUR[photometric] is None \
            else np.asarray(convert_color_space(ds.pixel_array, photometric, "RGB"), dtype=np.float64)
    except Exception as error:  # each codec fails its own way; the reason is reported, not swallowed
        raise InstanceRejected(f"pixel data cannot be decoded ({type(error).__name__})", file=file,
                               code="PIXEL_DATA_UNDECODABLE") from None
    if photometric in _COLOUR:
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise InstanceRejected("colour image without three samples per pixel", file=file, code="PIXEL_DATA_UNDECODABLE")
        pixels = pixels @ _LUMA
    if pixels.ndim != 2 or min(pixels.shape) < 2:
        raise InstanceRejected(f"pixel array of shape {pixels.shape} is not a 2-D image", file=file, code="PIXEL_DATA_UNDECODABLE")
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return resize_nearest(scaled, size).astype(np.float32)

"""The training view of a DICOM dataset: its stored images for an image model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from healthfed_common.plan import Plan
from silo_node.datasets.dicom_ingest import IMAGES_FILE, INDEX_FILE
from silo_node.datasets.dicom_pixels import resize_nearest
from silo_node.datasets.errors import FeatureNotAllowed
from silo_node.datasets.minimisation import SPLIT_COLUMN
from silo_node.datasets.view import TrainingView, positive_labels


def image_view(name: str, folder: Path, plan: Plan, subset: str) -> TrainingView:
    """images float32 [n, s, s, 1] with s = plan.model.image_size (resampled if the stored
    grid differs), labels float32 [n, 1]."""
    size = plan.model.image_size
    if size is None:
        raise FeatureNotAllowed("an image dataset needs an image model (model.image_size)", "image")
    index = pd.read_parquet(folder / INDEX_FILE)
    chosen = (index[SPLIT_COLUMN] == subset).to_numpy()
    images = np.load(folder / IMAGES_FILE, mmap_mode="r")[chosen]
    if images.shape[1] != size:
        images = np.stack([resize_nearest(image, size) for image in images]) if len(images) else np.zeros((0, size, size))
    labels = positive_labels(index[plan.label.name][chosen].reset_index(drop=True), plan.label.positive_values)
    return TrainingView(name, subset, np.ascontiguousarray(images[..., None], dtype=np.float32), labels, ("image",))

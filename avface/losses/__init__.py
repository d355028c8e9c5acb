"""AVFace losses as pure functions over tensors. The two that own pretrained networks (identity, ID-MRF/VGG19) are
models: :mod:`avface.models.perceptual`."""

from avface.losses.geometry import vertex_distance_loss
from avface.losses.landmarks import (
    eye_closure_loss,
    landmark_loss,
    landmark_weights,
    lip_corner_loss,
    mouth_closure_loss,
)
from avface.losses.maps import (
    coefficient_regularizer,
    displacement_l1,
    image_laplacian,
    laplacian_normals_loss,
    light_regularizer,
    nonvisible_region,
    photometric_loss,
    shape_consistency_loss,
    symmetry_loss,
)
from avface.losses.params import parameter_loss
from avface.losses.perceptual import id_mrf

__all__ = [
    "coefficient_regularizer", "displacement_l1", "eye_closure_loss", "id_mrf",
    "image_laplacian", "landmark_loss", "landmark_weights", "laplacian_normals_loss", "light_regularizer",
    "lip_corner_loss", "mouth_closure_loss", "nonvisible_region", "parameter_loss", "photometric_loss",
    "shape_consistency_loss", "symmetry_loss", "vertex_distance_loss",
]

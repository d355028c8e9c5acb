"""Evaluation metrics (bottom layer: pure functions over numpy arrays / torch tensors, no avface imports above
this package). Landmarks (Table 4), NoW-style scan-to-mesh (Table 5), 3D vertex metrics with ground truth and
the baseline faces they are reported beside."""

from avface.metrics.alignment import Similarity, apply_similarity, similarity_procrustes
from avface.metrics.ground_truth import Baselines, flat_frames, ground_truth_vertices
from avface.metrics.landmarks import (
    LIP_POINTS,
    OUTER_EYE_CORNERS,
    auc,
    ced_curve,
    failure_rate,
    landmark_nme,
    lip_nme,
    nme_normalizer,
    occluded_nme,
)
from avface.metrics.scan_to_mesh import (
    NOW_LANDMARKS_68,
    ScanToMeshResult,
    crop_scan,
    distance_stats,
    mesh_vertex_errors,
    scan_to_mesh,
)
from avface.metrics.surface import (
    MeshDistances,
    TriangleIndex,
    closest_points_on_triangles,
    point_mesh_distance_allpairs,
)
from avface.metrics.vertices import (
    aligned_vertex_distances,
    aligned_vertex_error,
    jitter,
    lip_vertex_error,
    vertex_acceleration,
    vertex_errors,
)

__all__ = [
    "Similarity", "apply_similarity", "similarity_procrustes",
    "LIP_POINTS", "OUTER_EYE_CORNERS", "auc", "ced_curve", "failure_rate", "landmark_nme", "lip_nme",
    "nme_normalizer", "occluded_nme",
    "NOW_LANDMARKS_68", "ScanToMeshResult", "crop_scan", "distance_stats", "mesh_vertex_errors", "scan_to_mesh",
    "MeshDistances", "TriangleIndex", "closest_points_on_triangles", "point_mesh_distance_allpairs",
    "aligned_vertex_distances", "aligned_vertex_error", "jitter", "lip_vertex_error", "vertex_acceleration",
    "vertex_errors",
    "Baselines", "flat_frames", "ground_truth_vertices",
]

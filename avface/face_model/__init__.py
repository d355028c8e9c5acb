"""FLAME-structured face models: the FLAME layer, loaders for the real FLAME, and an open starter model.

Public API::

    from avface.face_model import FaceModel, load_face_model
    model = FaceModel(load_face_model(None))          # open starter model
    model = FaceModel(load_face_model("generic_model.pkl", landmark_embedding="landmark_embedding.npy"))
"""

from avface.face_model.data import JOINT_NAMES, NOW7_FROM_68, REQUIRED_REGIONS, FaceModelData
from avface.face_model.flame import FaceModel, FaceModelOutput, vertices2landmarks
from avface.face_model.loading import load_face_model
from avface.face_model.starter import build_starter_model

__all__ = [
    "JOINT_NAMES",
    "NOW7_FROM_68",
    "REQUIRED_REGIONS",
    "FaceModel",
    "FaceModelData",
    "FaceModelOutput",
    "build_starter_model",
    "load_face_model",
    "vertices2landmarks",
]

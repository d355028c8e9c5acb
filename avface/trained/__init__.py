"""The trained model as a contract of its own, below training, inference and evaluation: the checkpoint format
(:mod:`checkpoints`: write, read, compatibility check, load) and the input contract every checkpoint carries
(:mod:`contract`: frame rate, window, image size, crop, audio features and statistics, face model). Training writes
them; inference and evaluation read them without importing ``avface.train``."""

from avface.trained.checkpoints import (
    CHECKPOINT_FILE,
    FINAL_FILE,
    CheckpointError,
    TrainedModel,
    check_compatible,
    find_latest_checkpoint,
    input_contract_of,
    load_trained,
    read_checkpoint,
    save_checkpoint,
)
from avface.trained.contract import InputContract, contract_from_summary, face_model_fingerprint, legacy_contract

__all__ = ["CHECKPOINT_FILE", "FINAL_FILE", "CheckpointError", "TrainedModel", "check_compatible",
           "find_latest_checkpoint", "input_contract_of", "load_trained", "read_checkpoint", "save_checkpoint",
           "InputContract", "contract_from_summary", "face_model_fingerprint", "legacy_contract"]

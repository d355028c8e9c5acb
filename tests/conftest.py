import os

# Keep tests deterministic and friendly to a 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import avface  # noqa: E402,F401  (loads OpenCV before any test imports decord, see avface/__init__.py)

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory):
    """A small synthetic corpus (3 training speakers, 1 held out) preprocessed into shards with ground truth,
    the renderer's normals and occluded copies: shared by the training tests (about 20 s to make)."""
    from avface.train.testing import make_training_shards

    return make_training_shards(tmp_path_factory.mktemp("train_shards"), dev_identities=3, test_identities=1,
                                num_cpus=2)["shards"]

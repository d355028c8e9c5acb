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

#: Session fixtures below that start Ray: a test that uses one is marked ``ray`` (``make test-fast`` skips it).
RAY_FIXTURES = {"tiny_checkpoint"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _ray_marker_is_honest(request, monkeypatch):
    """A test not marked ``ray`` that calls ``ray.init`` fails, naming the marker: the fast lane
    (``pytest -m "not ray and not slow"``) must not start Ray."""
    if request.node.get_closest_marker("ray") is not None:
        yield
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray: mark it @pytest.mark.ray")

    monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory):
    """A small synthetic corpus (3 training speakers, 1 held out) preprocessed into shards with ground truth,
    the renderer's normals and occluded copies: shared by the training tests (about 30 s to make, in this
    process: no Ray, so the fast lane's stage smoke test can use it)."""
    from avface.train.testing import make_training_shards

    return make_training_shards(tmp_path_factory.mktemp("train_shards"), dev_identities=3, test_identities=1,
                                use_ray=False)["shards"]


@pytest.fixture(scope="session")
def tiny_checkpoint(train_shards, tmp_path_factory):
    """A tiny model trained for 60 pretraining steps on ``train_shards`` (about a minute): ``final.pt``. Trained in
    this process (``use_ray=false``): the tests that use it are about the model, Ray Train has tests of its own."""
    from avface.train.trainer import run_training

    out = tmp_path_factory.mktemp("tiny_checkpoint")
    res = run_training({"data": {"shards": str(train_shards), "val_windows": 16, "val_occluded_windows": 0},
                        "out": str(out), "stage": "pretrain", "use_ray": False, "progress": False,
                        "tracking": {"registered_model": ""},
                        "stages": {"pretrain": {"steps": 60, "val_every": 20, "report_every": 10}}})
    return res["final"]

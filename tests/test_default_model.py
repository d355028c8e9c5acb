"""The shipped default model (avface/assets/default_model/): it loads with the safe loader, carries its input
contract, reproduces its model card's numbers on the fixed check set, and is what `avface reconstruct` falls back
on (saying so) when there is no trained or registered model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avface.trained.checkpoints import SHIPPED_MODEL, load_trained, read_checkpoint, shipped_model
from avface.trained.contract import InputContract

CARD = SHIPPED_MODEL.parent / "model_card.json"


def test_shipped_model_loads_safely_and_carries_its_contract():
    assert SHIPPED_MODEL.is_file() and (SHIPPED_MODEL.parent / "MODEL_CARD.md").is_file()
    assert SHIPPED_MODEL.stat().st_size < 20e6, "the shipped model is meant to be a few MB"
    # weights_only: no pickled code in the file
    raw = torch.load(SHIPPED_MODEL, map_location="cpu", weights_only=True)
    assert "optimizer" not in raw
    ckpt = read_checkpoint(SHIPPED_MODEL)
    contract = InputContract.from_dict(ckpt["input_contract"])
    card = json.loads(CARD.read_text())
    # through the contract type: a field added to the contract since has its default on both sides
    assert contract == InputContract.from_dict(card["input_contract"])
    assert contract.audio_kind == "mel" and contract.window == 16 and contract.image_size == card["image_size"]
    assert ckpt["extras"]["statistics"]["expression"]["mean"], "the constant baseline's statistics"
    trained = load_trained(SHIPPED_MODEL)
    assert trained.contract == contract and trained.face_model.name.startswith("avface-starter")


def test_shipped_model_is_the_fallback(monkeypatch, tmp_path):
    monkeypatch.delenv("AVFACE_DEFAULT_MODEL", raising=False)
    assert shipped_model() == SHIPPED_MODEL
    monkeypatch.setenv("AVFACE_DEFAULT_MODEL", "none")
    assert shipped_model() is None
    monkeypatch.setenv("AVFACE_DEFAULT_MODEL", str(tmp_path / "m.pt"))
    assert shipped_model() == tmp_path / "m.pt"


def test_reconstruct_without_a_trained_model_uses_the_shipped_one(tmp_path, monkeypatch, capsys):
    import numpy as np

    from avface.cli import main
    from avface.io.media import write_mp4

    monkeypatch.chdir(tmp_path)  # no runs/train here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AVFACE_DEFAULT_MODEL", raising=False)
    frames = np.full((20, 64, 64, 3), 128, np.uint8)
    write_mp4(tmp_path / "clip.mp4", frames, 25.0)
    rc = main(["reconstruct", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "o"), "--crop", "none", "--quiet",
               "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"model          {SHIPPED_MODEL}" in text and "the project's default model" in text
    assert (tmp_path / "o" / "clip.npz").is_file()


@pytest.mark.slow
def test_shipped_model_reproduces_its_card_on_the_check_set(tmp_path: Path):
    """The card's check-set numbers, measured again on the check set rebuilt from its seed (no Ray)."""
    from avface.train.default_model import CARD_METRICS, CHECK_SET, check_set_shards, held_out_numbers

    card = json.loads(CARD.read_text())
    assert card["check_set"]["config"] == CHECK_SET
    numbers = held_out_numbers(SHIPPED_MODEL, check_set_shards(tmp_path / "check"))
    want = card["check_set"]["numbers"]
    for key in CARD_METRICS:
        assert numbers[key] == pytest.approx(want[key], rel=0.02, abs=1e-3), key
    # and the card's claim: better than the constant baseline on the held-out speakers and on the check set
    for measured in (card["held_out"]["numbers"], numbers):
        for term in ("v3d_mm", "lip_mm", "expression_mm"):
            assert measured[term] < measured[f"constant/{term}"], term

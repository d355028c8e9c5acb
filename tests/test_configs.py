"""One source of truth for configuration: the dataclasses in avface/<area>/config.py, registered with Hydra's
ConfigStore by avface.configs.register_all(); conf/*.yaml only pick them (defaults, ??? keys, Hydra settings)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from avface.ablation.config import AblationConfig
from avface.audio.config import FEATURE_KINDS, AudioKind
from avface.configs import register_all
from avface.data.config import PreprocessConfig
from avface.demo.config import MainConfig
from avface.evaluate.config import EvaluateConfig
from avface.models.config import AVFaceConfig
from avface.models.stages import MODEL_STAGES, STAGE_TABLE, TRAINING_ORDER, ModelStageName, Stage, StageName
from avface.synth.config import SIZE_PRESETS, CorpusSize, SynthesizeConfig
from avface.train.config import StageChoice, TrainConfig
from avface.utils.config import dataclass_from_dict, omegaconf_node, store_config
from occlusion_synth.config import OccludeConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

#: pipelines/<name>.py -> the dataclass of its config (conf/<name>.yaml). A new pipeline is added here.
PIPELINES: dict[str, type] = {
    "ablate": AblationConfig,
    "evaluate": EvaluateConfig,
    "main": MainConfig,
    "occlude": OccludeConfig,
    "preprocess": PreprocessConfig,
    "synthesize": SynthesizeConfig,
    "train": TrainConfig,
}


def _plain(obj) -> object:
    """The dataclass defaults as YAML prints them (tuples are lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _restated(node: object, path: str = "") -> list[str]:
    """Keys of a YAML mapping that set a value (anything but ``???``), as dotted paths."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _restated(v, f"{path}.{key}" if path else str(key))]
    return [] if node == "???" else [path]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_all()


def test_every_pipeline_is_listed():
    assert sorted(p.stem for p in (ROOT / "pipelines").glob("*.py") if p.stem != "__init__") == sorted(PIPELINES)
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(PIPELINES)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml")))
def test_no_yaml_restates_a_dataclass_default(path):
    """A YAML keeps only its defaults list, required ``???`` keys and Hydra settings: a value restated there would
    silently override a default changed in Python."""
    data = yaml.safe_load((CONF / path).read_text())
    assert isinstance(data, dict) and "defaults" in data, path
    rest = {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
    assert _restated(rest) == [], f"conf/{path} restates dataclass defaults (keep them in the dataclass)"
    schema = f"{Path(path).stem}_schema"
    assert data["defaults"][0] == schema and ConfigStore.instance().repo.get(f"{schema}.yaml") is not None


def test_restated_detector_catches_a_value():
    assert _restated({"out": "???", "data": {"root": "???", "fps": 25.0}}) == ["data.fps"]


def _cfg_job(name: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, f"pipelines/{name}.py", "--cfg", "job", *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_cfg_job_prints_every_field_with_its_default():
    """``python pipelines/X.py --cfg job`` of every pipeline prints every dataclass field with its value; an
    override on the command line shows in it (converted to the field's type)."""
    override = {"main": ("corpus.size=small", "small"), "occlude": ("occlusion.motion.max_speed=1", 1.0),
                "preprocess": ("video.fps=30", 30.0), "synthesize": ("vox.fps=30", 30.0),
                "train": ("stages.lip.steps=7", 7), "evaluate": ("multiface.max_frames=3", 3),
                "ablate": ("budget.lip_steps=7", 7)}
    procs = {name: _cfg_job(name, override[name][0]) for name in PIPELINES}
    for name, cls in PIPELINES.items():
        out, err = procs[name].communicate(timeout=300)
        assert procs[name].returncode == 0, err[-2000:]
        arg, value = override[name]
        *parents, key = arg.split("=")[0].split(".")
        expected = _plain(cls())
        node = expected
        for k in parents:
            node = node[k]
        assert node[key] != value
        node[key] = value
        printed = yaml.safe_load(out)
        assert printed == expected, name
        for k in parents:
            printed = printed[k]
        assert type(printed[key]) is type(value), (name, printed)


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize(("name", "overrides", "check"), [
    ("preprocess", ["out=/o", "data.root=/r", "audio.kind=phones", "video.crop=landmarks", "normals.source=auto"],
     lambda c: (c.audio.kind, c.video.crop, c.normals.source) == ("phones", "landmarks", "auto")),
    ("synthesize", ["out=/o", "size=small", "multiface.cameras=3"],
     lambda c: (c.size, c.multiface.cameras) == ("small", 3)),
    ("evaluate", ["model_uri=models:/avface@champion", "faceset.shards=null", "nightly.enabled=true"],
     lambda c: (c.model_uri, c.faceset.shards, c.nightly.enabled) == ("models:/avface@champion", None, True)),
    ("main", ["shards.audio_kind=wav2vec2", "turntable.num_frames=4"],
     lambda c: (c.shards.audio_kind, c.turntable.num_frames) == ("wav2vec2", 4)),
    ("occlude", ["write=png", "occlusion.hand.source=folder", "occlusion.hand.poses=[fist]"],
     lambda c: (c.write, c.occlusion.hand.source, c.occlusion.hand.poses) == ("png", "folder", ["fist"])),
])
def test_overrides_build_the_typed_config(name, overrides, check):
    config = dataclass_from_dict(PIPELINES[name], _compose(name, *overrides))
    assert isinstance(config, PIPELINES[name]) and check(config)


@pytest.mark.parametrize(("name", "override", "allowed"), [
    ("preprocess", "video.crop=box", ["'none'", "'landmarks'"]),
    ("preprocess", "video.frames_format=png", ["'jpg'", "'npy'"]),
    ("preprocess", "audio.kind=mfcc", [repr(k) for k in FEATURE_KINDS]),
    ("preprocess", "landmarks.detector=dlib", ["'auto'", "'mediapipe'", "'none'"]),
    ("preprocess", "normals.source=deca", ["'none'", "'auto'", "'teacher'", "'renderer'"]),
    ("synthesize", "size=huge", ["'tiny'", "'small'", "'medium'", "'large'"]),
    ("main", "corpus.size=huge", ["'tiny'", "'large'"]),
    ("main", "shards.audio_kind=mfcc", ["'mel'", "'phones'"]),
    ("occlude", "write=gif", ["'mp4'", "'png'"]),
    ("occlude", "occlusion.hand.source=svg", ["'procedural'", "'folder'"]),
    ("occlude", "occlusion.hand.orientation=down", ["'up'", "'auto'"]),
    ("occlude", "occlusion.hand.poses=[open,wave]", ["'open'", "'fist'"]),
])
def test_bad_string_option_lists_the_allowed_values(name, override, allowed):
    key, value = override.split("=")
    cfg = _compose(name, "out=/o", override, *(["data.root=/r"] if name == "preprocess" else []))
    where = rf"{key}\[1\]" if value.startswith("[") else key
    bad = value.strip("[]").split(",")[-1]
    with pytest.raises(ValueError, match=rf"config {where}='{bad}' is not allowed; allowed values: ") as e:
        dataclass_from_dict(PIPELINES[name], cfg)
    assert all(a in str(e.value) for a in allowed)


def test_schema_nodes_type_check_overrides():
    with pytest.raises(Exception, match="video.fps"):
        _compose("preprocess", "video.fps=fast")
    with pytest.raises(Exception, match="fpss"):
        _compose("preprocess", "video.fpss=30")


def test_literal_aliases_match_what_uses_them():
    assert tuple(SIZE_PRESETS) == typing.get_args(CorpusSize)
    assert MODEL_STAGES == typing.get_args(ModelStageName)
    assert TRAINING_ORDER == typing.get_args(StageName) == tuple(Stage)
    assert typing.get_args(StageChoice) == ("all", *TRAINING_ORDER)
    assert set(MODEL_STAGES) == {spec.depth for spec in STAGE_TABLE.values()}
    assert FEATURE_KINDS == typing.get_args(AudioKind)


# ------------------------------------------------------------- a pipeline with the model group (as train will be)
@dataclass
class TrainLike:
    """What a pipeline that trains a model declares: its own fields and a ``model`` node."""

    out: str = "???"
    steps: int = 10
    model: AVFaceConfig = field(default_factory=AVFaceConfig)


def test_model_group_from_a_pipeline_defaults_list(tmp_path):
    store_config("trainlike_schema", TrainLike)
    (tmp_path / "trainlike.yaml").write_text("defaults:\n  - trainlike_schema\n  - model: tiny\n  - _self_\n\n"
                                             "out: ???\n")

    def build(*overrides):
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            return dataclass_from_dict(TrainLike, compose("trainlike", overrides=["out=/o", *overrides]))

    assert build() == TrainLike(out="/o", model=AVFaceConfig.tiny())
    assert build("model=paper").model == AVFaceConfig.paper()
    tuned = build("model.image_size=128", "model.stages=[coarse,lip]", "steps=3")
    assert tuned.model.image_size == 128 and tuned.model.stages == ("coarse", "lip") and tuned.steps == 3
    assert tuned.model.coarse == AVFaceConfig.tiny().coarse
    with pytest.raises(ValueError, match=r"model\.stages\[1\]='fine' is not allowed; allowed values: 'coarse', "):
        build("model.stages=[coarse,fine]")
    with pytest.raises(ValueError, match=r"model\.coarse\.backbone\.block='resnet' is not allowed"):
        build("model.coarse.backbone.block=resnet")


def test_omegaconf_node_of_a_preset_keeps_every_value():
    node = OmegaConf.structured(omegaconf_node(AVFaceConfig.tiny()))
    assert OmegaConf.to_container(node) == AVFaceConfig.tiny().to_dict()
    assert dataclass_from_dict(AVFaceConfig, node) == AVFaceConfig.tiny()
    with pytest.raises(TypeError, match="dataclass"):
        omegaconf_node({"a": 1})

"""Config system: presets, overrides, strict validation with one-line errors, round trips."""

import dataclasses

import pytest
import yaml

from worldline.core.config import (
    ModelConfig,
    apply_overrides,
    deep_merge,
    from_dict,
    list_presets,
    load_preset,
    model_config_from_dict,
    register_model,
    to_dict,
)
from worldline.core.errors import WorldlineError
from worldline.train.config import RunConfig, TrainConfig


@dataclasses.dataclass
class _ToyConfig(ModelConfig):
    depth: int = 2  # blocks
    width: float = 1.5
    levels: tuple[int, ...] = (8, 5)

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth=}")


@register_model("_toy_config_test", _ToyConfig)
class _Toy:
    def __init__(self, config):
        self.config = config


def test_every_preset_resolves_at_every_size():
    presets = list_presets()
    assert presets, "no presets shipped"
    for name, p in presets.items():
        assert "debug" in p["sizes"], f"preset {name} lacks a debug size"
        for size in p["sizes"]:
            cfg = RunConfig.from_dict(load_preset(name, size))
            assert cfg.meta["preset"] == name and cfg.meta["size"] == size
            again = RunConfig.from_dict(cfg.to_dict())  # the saved config rebuilds the same run
            assert again.to_dict() == cfg.to_dict()


def test_overrides_parse_yaml_values_and_nest():
    raw = {"model": {"type": "_toy_config_test", "depth": 2}, "train": {"steps": 10}}
    out = apply_overrides(raw, ["model.depth=4", "train.lr=1e-3", "model.levels=[4, 4]", "train.betas=[0.9, 0.95]"])
    cfg = RunConfig.from_dict(out)
    assert cfg.model.depth == 4 and cfg.model.levels == (4, 4)
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.betas == (0.9, 0.95)
    assert raw["model"]["depth"] == 2  # input untouched


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.depht=3", "model.depht"),
        ("train.stpes=3", "train.stpes"),
        ("model.depth=three", "model.depth"),
        ("model.depth=0", "depth must be >= 1"),
        ("train.precision=fp8", "precision"),
        ("model.type=nope", "unknown model type 'nope'"),
        ("optim.lr=1", "optim"),
    ],
)
def test_bad_config_gives_one_line_error_naming_the_key(override, needle):
    raw = {"model": {"type": "_toy_config_test"}}
    with pytest.raises(WorldlineError) as e:
        RunConfig.from_dict(apply_overrides(raw, [override]))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_override_syntax_errors():
    with pytest.raises(WorldlineError, match="key.path=value"):
        apply_overrides({}, ["model.depth"])
    with pytest.raises(WorldlineError, match="not a section"):
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])


def test_unknown_preset_and_size():
    with pytest.raises(WorldlineError, match="unknown preset 'nope'"):
        load_preset("nope", "debug")
    name = next(iter(list_presets()))
    with pytest.raises(WorldlineError, match="has no size 'huge'"):
        load_preset(name, "huge")


def test_model_config_round_trip_carries_type():
    cfg = model_config_from_dict({"type": "_toy_config_test", "depth": 3})
    d = to_dict(cfg)
    assert d == {"type": "_toy_config_test", "depth": 3, "width": 1.5, "levels": [8, 5]}
    assert model_config_from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg


def test_deep_merge_replaces_on_type_change():
    base = {"model": {"type": "a", "x": 1, "y": 2}}
    assert deep_merge(base, {"model": {"y": 3}}) == {"model": {"type": "a", "x": 1, "y": 3}}
    assert deep_merge(base, {"model": {"type": "b", "z": 1}}) == {"model": {"type": "b", "z": 1}}


def test_train_config_validation():
    with pytest.raises(WorldlineError, match="ema_decay"):
        from_dict(TrainConfig, {"ema_decay": 1.5}, "train")
    assert from_dict(TrainConfig, {"steps": 5}, "train").steps == 5

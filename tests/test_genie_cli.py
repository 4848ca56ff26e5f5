"""`worldline genie label | map | controllability` on a tiny toy-world dataset and an untrained debug model."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from worldline.cli.main import app
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.data.format import Dataset, DatasetWriter

from test_genie import SIZE, genie, toy_world

SPEC = ActionSpec(kind="discrete", dim=1, n=2, names=["LEFT", "RIGHT"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("genie_cli")
    frames, actions = toy_world(3, 10, seed=4)
    with DatasetWriter(root / "data", fps=10, image_shape=(SIZE, SIZE, 3), action_spec=SPEC) as w:
        for i in range(3):
            x = ((frames[i].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)  # (T, H, W, 3)
            w.add_episode(x, actions[i, :, None].astype(np.float32), np.zeros(10, np.float32), np.arange(10) == 9)
    genie().eval().save_pretrained(root / "ckpt")
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_label_writes_latent_actions_as_the_discrete_action_column(setup):
    out = setup / "labelled"
    result = invoke("genie", "label", setup / "data", "--ckpt", setup / "ckpt", "--out", out)
    assert result.exit_code == 0, result.output
    ds, src = Dataset(out), Dataset(setup / "data")
    assert ds.action_spec.kind == "discrete" and ds.action_spec.n == 8
    assert ds.num_episodes == src.num_episodes and ds.num_frames == src.num_frames
    a = ds.arrays()["actions"][:, 0]
    assert a.min() >= 0 and a.max() < 8 and np.array_equal(a, a.round())
    assert np.abs(ds.episode_frames(0).astype(int) - src.episode_frames(0).astype(int)).mean() < 3  # same video
    # an existing dataset is only replaced on request
    again = invoke("genie", "label", setup / "data", "--ckpt", setup / "ckpt", "--out", out)
    assert again.exit_code != 0 and isinstance(again.exception, WorldlineError)
    assert invoke("genie", "label", setup / "data", "--ckpt", setup / "ckpt", "--out", out, "--overwrite").exit_code == 0


def test_map_prints_the_confusion_table_purity_and_keys(setup):
    result = invoke("genie", "map", "--ckpt", setup / "ckpt", "--data", setup / "data", "--episodes", "all")
    assert result.exit_code == 0, result.output
    assert "LEFT" in result.output and "RIGHT" in result.output
    assert "purity true->latent" in result.output and "codes used" in result.output
    assert "proposed keys: LEFT -> " in result.output and "RIGHT -> " in result.output


def test_controllability_reports_delta_psnr(setup):
    result = invoke("genie", "controllability", "--ckpt", setup / "ckpt", "--data", setup / "data",
                    "--episodes", "all", "--windows", "4", "--horizon", "2")
    assert result.exit_code == 0, result.output
    assert "delta-PSNR at horizon 2" in result.output
    assert "context 2," in result.output  # the debug model's window_frames 3 - 1, what play keeps


def test_genie_commands_reject_bad_inputs(setup, tmp_path):
    from test_genie import genie_config
    from worldline.core.config import build_model, model_config_from_dict

    build_model(model_config_from_dict(genie_config().tokenizer)).save_pretrained(tmp_path / "tok")
    result = invoke("genie", "map", "--ckpt", tmp_path / "tok", "--data", setup / "data")
    assert isinstance(result.exception, WorldlineError) and "not a genie model" in str(result.exception)
    result = invoke("genie", "map", "--ckpt", setup / "ckpt", "--data", tmp_path / "missing")
    assert isinstance(result.exception, WorldlineError)
    frames, _ = toy_world(1, 4)
    video_only = tmp_path / "video_only"
    with DatasetWriter(video_only, fps=10, image_shape=(SIZE, SIZE, 3), action_spec=ActionSpec()) as w:
        w.add_episode(((frames[0].permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8))
    result = invoke("genie", "map", "--ckpt", setup / "ckpt", "--data", video_only, "--episodes", "all")
    assert isinstance(result.exception, WorldlineError) and "discrete true actions" in str(result.exception)
    # but a video-only dataset can be labelled, after which it has actions
    assert invoke("genie", "label", video_only, "--ckpt", setup / "ckpt").exit_code == 0
    assert Dataset(tmp_path / "video_only-latent").action_spec.n == 8

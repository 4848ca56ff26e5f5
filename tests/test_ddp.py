"""DDP on CPU (gloo) under torchrun: two ranks draw disjoint batches, end with identical weights,
rank 0 alone writes, and a stopped run resumes exactly. The workers run the ``ddp`` entry point of
tests/test_trainer.py (one torchrun launch does the reference run and the stopped/resumed one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "test_trainer.py"), "ddp", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def rows(out: Path, split: str = "train") -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["split"] == split]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ranks_draw_disjoint_batches_and_end_with_identical_weights(ddp_out):
    assert same(weights(ddp_out / "ref-rank0.safetensors"), weights(ddp_out / "ref-rank1.safetensors"))
    s0 = json.loads((ddp_out / "rank0.json").read_text())
    s1 = json.loads((ddp_out / "rank1.json").read_text())
    assert s0["world_size"] == s1["world_size"] == 2
    by_step = {step: set(ix) for step, ix in s0["seen"]}
    assert set(range(12)) <= set(by_step)  # 6 steps x 2 micro-batches (and a few prefetched)
    for step, ix in s1["seen"]:
        assert not by_step[step] & set(ix), step
    # rank 0 alone logs (one line per step) and exports
    ref = ddp_out / "ref"
    assert [s for s, _ in rows(ref)] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in rows(ref, "val")] == [3, 6]
    assert json.loads((ref / "final" / "config.json").read_text())["extra"]["step"] == 6
    assert len(list((ref / "tb").glob("events.out.tfevents.*"))) == 1


def test_ddp_resume_is_exact(ddp_out):
    assert rows(ddp_out / "resumed") == rows(ddp_out / "ref")
    assert same(weights(ddp_out / "ref" / "final" / "model.safetensors"), weights(ddp_out / "resumed" / "final" / "model.safetensors"))
    assert same(weights(ddp_out / "resumed-rank0.safetensors"), weights(ddp_out / "resumed-rank1.safetensors"))

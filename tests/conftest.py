import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the test models are tiny, and on a busy 2-core machine two spinning OpenMP threads
# made them 20-40x slower (see BENCHMARKS.md, the thread note).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

"""Shared pieces of the play-server tests: a debug checkpoint, a tiny dataset, a toy world model
whose steps can be held back, a live uvicorn server in a thread, and a message reader."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import types

import numpy as np
import torch
from torch import nn

from _data_helpers import make_frames
from test_contracts import ACTIONS, debug_config
from worldline.core.config import build_model
from worldline.core.contracts import ActionSpec, State, WorldModel
from worldline.data.format import DatasetWriter
from worldline.serve import codec


def debug_model(seed: int = 0) -> WorldModel:
    """The deterministic family's debug preset (64x64, continuous 2-D actions in [0, 512]) with
    random weights everywhere, so that every step and every action visibly changes the picture
    (a fresh model's zero-initialised output layer would predict "nothing moves")."""
    torch.manual_seed(seed)
    cfg = debug_config("wm-deterministic")
    cfg.correction_gate = 0.0
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        for p in model.action_embed.parameters():
            p.normal_(0, 1.0)
    return model


def write_dataset(path, episodes: int = 2, length: int = 12, env_id: str | None = None) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    with DatasetWriter(path, fps=10, image_shape=(64, 64, 3), action_spec=ACTIONS, env_id=env_id) as w:
        for e in range(episodes):
            ep = {"frames": make_frames(length, e, size=64), "actions": rng.uniform(0, 512, (length, 2)).astype(np.float32)}
            w.add_episode(ep["frames"], ep["actions"])
            out.append(ep)
    return out


class ToyState(State):
    def __init__(self, x: torch.Tensor, text: str | None = None):
        self.x, self.text = x, text

    def clone(self) -> "ToyState":
        return ToyState(self.x.clone(), self.text)


class ToyModel(WorldModel):
    """A 16x16 world: the picture brightens by the action each step; a prompt sets the blue channel.
    A step with action 1.0 waits for ``gate`` (so a test can hold one session's generation)."""

    takes_text = True

    def __init__(self, gate: threading.Event | None = None):
        super().__init__()
        self.config = types.SimpleNamespace(image_size=(16, 16), context_frames=2)
        self.action_spec = ActionSpec(kind="continuous", dim=1, low=[0.0], high=[1.0])
        self.scale = nn.Parameter(torch.ones(1))
        self.gate = gate
        self.texts: list = []

    def loss(self, batch):
        return self.scale.sum(), {}

    def window(self) -> int:
        return 2

    def init_state(self, context_frames, context_actions=None, text=None):
        self.texts.append(text)
        x = context_frames[:, -1].clone()
        if text and text[0]:
            x[:, 2] = (len(text[0]) % 10) / 5 - 1
        return ToyState(x, text[0] if text else None)

    def step(self, state, action):
        if self.gate is not None and float(action[0, 0]) >= 1.0:
            assert self.gate.wait(30), "the test never released the gate"
        x = (state.x + 0.25 * action[:, :, None, None] - 0.05).clamp(-1, 1)
        return ToyState(x, state.text), x

    def embed(self, frames):
        return frames

    def imagine(self, state, actions):
        return state.x[:, None].expand(-1, actions.shape[1], -1, -1, -1)


# ------------------------------------------------------------------------------------------------
# reading a session
# ------------------------------------------------------------------------------------------------


class Reader:
    """Reads a session's messages from any client with ``receive() -> str | bytes``."""

    def __init__(self, receive):
        self.receive = receive

    def next(self):
        m = self.receive()
        if isinstance(m, (bytes, bytearray)):
            return "frame", codec.unpack(bytes(m))
        import json

        return "json", json.loads(m)

    def expect(self, kind: str | None = None, frames: int = 0, allow_error: bool = False):
        """Read until a JSON reply of ``kind`` (if given) and ``frames`` frames have come; returns
        (reply, [(header, pictures)])."""
        reply, got = None, []
        while (kind is not None and reply is None) or len(got) < frames:
            what, m = self.next()
            if what == "frame":
                got.append(m)
            elif m["type"] == kind:
                reply = m
            elif m["type"] == "error" and not allow_error:
                raise AssertionError(f"unexpected error reply: {m['message']}")
        return reply, got


RECEIVE_TIMEOUT = 60.0  # a reply that never comes fails the test instead of hanging it


def starlette_receive(ws):
    """``receive`` for a test-client WebSocket, with a timeout (the test client's own has none)."""
    import anyio

    async def _get():
        with anyio.fail_after(RECEIVE_TIMEOUT):
            return await ws._send_rx.receive()

    def receive():
        m = ws.portal.call(_get) if hasattr(ws, "_send_rx") else ws.receive()
        if m.get("bytes") is not None:
            return m["bytes"]
        if m.get("text") is not None:
            return m["text"]
        raise AssertionError(f"socket closed: {m}")

    return receive


def pixels(frame) -> np.ndarray:
    header, pics = frame
    return codec.decode(pics[0], header["fmt"], (header["h"], header["w"]))


# ------------------------------------------------------------------------------------------------
# a live server
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """Run ``app`` under uvicorn in a thread; yields its base URL (http://127.0.0.1:PORT)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=16 * 2**20))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

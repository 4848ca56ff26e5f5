"""The play server: a FastAPI app with the page, a JSON description of the model, and one WebSocket
per play session.

Routes: ``GET /`` the page, ``GET /static/*`` its script and style, ``GET /api/info`` the model,
its controls and the server's limits, ``WS /ws`` a session.

The session protocol. The client sends JSON objects ``{"type": ..., "id": optional}``; replies
echo ``id``; a refused message gets ``{"type": "error", "message": one line}`` and the session
goes on. Frames come as binary messages (see serve/codec.py).

- ``start``: from ``episode`` (+ ``frame``) of the dataset, an uploaded ``image`` or ``video``
  (base64 or data: URL), ``env_seed`` (the real world's first picture) or ``branch`` (a token from
  ``branch``); optional ``text``, ``fps``, ``paused``, ``window`` (frames in flight, acknowledged
  with ``ack``), ``ckpt``/``data`` (paths inside the allowed directories) -> ``started``.
- ``action`` (``action``: numbers, or ``name``; ``seq``: echoed in the frames it produces): the
  action held from the next step on; ``step`` one step (paused or not); ``pause``/``resume``;
  ``fps``; ``reset`` (back to the start).
- ``checkpoint`` -> ``checkpointed`` (a name); ``restore`` a name; ``branch`` a name ->
  ``branched`` (a token another session starts from, ``/?branch=TOKEN`` in the page).
- ``record`` ``on: true``/``false`` -> ``recorded``: the steps in between appended as one episode
  to the ``--record-dir`` dataset. ``text`` a prompt (guardrail first) for text-conditioned models.
  ``ping`` -> ``pong``.

Safety: the WebSocket refuses browsers from other origins (a web page elsewhere must not drive a
local server), sessions are capped, messages are size-limited, every path a client names must lie
inside the allowed directories, and nothing loaded is pickled (checkpoints are JSON + safetensors).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from worldline.core.errors import WorldlineError
from worldline.serve.codec import ENCODINGS
from worldline.serve.config import ServeConfig, allowed_path
from worldline.serve.session import Moment, Session
from worldline.serve.world import World

log = logging.getLogger("worldline.serve")
STATIC = Path(str(resources.files("worldline.serve") / "static"))
MAX_BRANCHES = 64  # branch points kept for tabs that have not opened yet; the oldest go first
MAX_WORLDS = 4  # checkpoints loaded at once when clients name their own
TOO_MANY_SESSIONS = 1013  # WebSocket close code "try again later"


class Manager:
    """The server's shared state: sessions, loaded worlds, branch points, the recording lock."""

    def __init__(self, config: ServeConfig, world: World | None = None):
        self.config = config
        self.default_world = world
        self.sessions: dict[str, Session] = {}
        self.branches: OrderedDict[str, Moment] = OrderedDict()
        self.worlds: dict[tuple[str, str | None], World] = {}
        self._lock = threading.Lock()  # worlds are loaded on worker threads
        self._record_lock = threading.Lock()  # sessions append to one dataset, one episode at a time

    def world_for(self, ckpt: Any, data: Any) -> World:
        """The world a client names (paths inside the allowed directories only), loaded once."""
        if ckpt is None:
            if self.default_world is None:
                raise WorldlineError("'data' needs 'ckpt' on a server without a default model")
            ckpt_path = None
        else:
            ckpt_path = allowed_path(ckpt, self.config.allowed_dirs, "checkpoint")
        data_path = allowed_path(data, self.config.allowed_dirs, "dataset") if data is not None else None
        if ckpt_path is None:
            base = self.default_world
            assert base is not None
            key = (f"default:{id(base)}", str(data_path))
        else:
            key = (str(ckpt_path), str(data_path) if data_path else None)
        with self._lock:
            if key in self.worlds:
                return self.worlds[key]
            if len(self.worlds) >= MAX_WORLDS:
                raise WorldlineError(f"this server already holds {MAX_WORLDS} models; restart it to load others")
            if ckpt_path is None:
                from worldline.data.format import Dataset

                world = World(base.model, Dataset(data_path), name=base.name, meta=base.meta, real_env=self.config.real_env)
            else:
                world = World.load(ckpt_path, data_path, real_env=self.config.real_env)
            self.worlds[key] = world
            return world

    def add_branch(self, moment: Moment) -> str:
        token = secrets.token_urlsafe(9)
        self.branches[token] = moment
        while len(self.branches) > MAX_BRANCHES:
            self.branches.popitem(last=False)
        return token

    def branch(self, token: Any) -> Moment:
        if not isinstance(token, str) or token not in self.branches:
            raise WorldlineError(f"unknown branch {str(token)[:40]!r} (branch points last until {MAX_BRANCHES} newer ones are made)")
        return self.branches[token].copy()

    def write_recording(self, world: World, rec: dict[str, Any]) -> int:
        """Append a recording as one episode of the dataset in ``record_dir`` (atomic: see data/format.py)."""
        import numpy as np

        from worldline.data.format import DatasetWriter

        root = self.config.record_dir
        assert root is not None
        T = len(rec["actions"])
        frames = np.stack(rec["frames"][:T])  # (T, H, W, 3): frame t is the picture before action t
        actions = np.stack(rec["actions"])  # (T, A)
        with self._record_lock:
            mode = "append" if (root / "meta" / "info.json").is_file() else "create"
            if mode == "create" and root.is_dir() and any(root.iterdir()):
                raise WorldlineError(f"--record-dir {root} exists and is not a worldline dataset")
            env_id = world.dataset.env_id if world.dataset is not None else None
            with DatasetWriter(root, fps=world.fps, image_shape=frames.shape[1:], action_spec=world.spec, env_id=env_id, mode=mode) as w:
                return w.add_episode(frames, actions.reshape(T, -1), task=rec["task"])


def _same_origin(ws: WebSocket) -> bool:
    """Non-browser clients send no Origin; a browser's must name this server (host and port)."""
    origin = ws.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == (ws.headers.get("host") or "").lower()


def create_app(config: ServeConfig | None = None, world: World | None = None) -> FastAPI:
    """The play server for ``world`` (sessions may also name other checkpoints inside the allowed
    directories)."""
    config = config or ServeConfig()
    torch.set_num_threads(config.threads)
    manager = Manager(config, world)
    app = FastAPI(title="worldline play", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    def info() -> JSONResponse:
        body: dict[str, Any] = {
            "model": manager.default_world.info() if manager.default_world is not None else None,
            "server": {
                "sessions": len(manager.sessions),
                "max_sessions": config.max_sessions,
                "encoding": config.encoding,
                "encodings": list(ENCODINGS),
                "fps": config.fps,
                "record": config.record_dir is not None,
                "max_message_bytes": config.max_message_bytes,
                "max_upload_bytes": config.max_upload_bytes,
            },
        }
        return JSONResponse(body)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.websocket("/ws")
    async def play(ws: WebSocket) -> None:
        if not _same_origin(ws):
            await ws.close(code=1008, reason="cross-origin connections are refused")
            return
        await ws.accept()
        if len(manager.sessions) >= config.max_sessions:
            await ws.send_json({"type": "error", "message": f"too many sessions: this server plays at most {config.max_sessions} at once; try again later"})
            await ws.close(code=TOO_MANY_SESSIONS)
            return
        session = Session(manager)
        manager.sessions[session.id] = session
        log.info("session %s opened (%d now)", session.id, len(manager.sessions))
        try:
            await session.serve(ws)
        finally:
            manager.sessions.pop(session.id, None)
            log.info("session %s closed (%d now)", session.id, len(manager.sessions))

    return app

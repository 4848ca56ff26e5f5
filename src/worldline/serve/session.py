"""One play session: one WebSocket, one worker thread that owns the world state.

The worker thread runs the real-time loop: it steps the world at the target fps with the action
the player currently holds, and between steps it runs the session's commands (start, restore,
record, ...) in the order they came, so nothing else ever touches the state and no lock is needed.
``torch`` releases the GIL inside its kernels, so sessions generate side by side and never wait on
each other; one thread per session also keeps each real env's GL context on one thread. The
asyncio side only reads the socket (the *receiver*) and writes to it (the *sender*).

Frames pass from the worker to the sender through a one-frame slot, not a queue: a client that
reads slower than the world runs gets the newest frame and the ones it missed are counted as
dropped (the page shows the count). A client may also cap the frames in flight (``"window": n``
in its start message, then one ``{"type": "ack"}`` per frame shown): the sender then holds back
until the client caught up, so frames are dropped here rather than queued in socket buffers, and
what the player sees is never more than n frames old. Control replies go through a queue and are
never dropped.

A key press reaches the world at the next step; a new action also wakes a worker that is waiting
for its next tick (a step comes at most half a period early, so fast mouse control cannot speed
the world up).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import queue
import secrets
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from starlette.websockets import WebSocket, WebSocketDisconnect

from worldline.core.contracts import State
from worldline.core.errors import WorldlineError
from worldline.serve import codec
from worldline.serve.controls import parse_action
from worldline.serve.twin import SYNC_PSNR_DB, Twin, psnr
from worldline.serve.world import World, decode_image, decode_video

if TYPE_CHECKING:
    from worldline.serve.app import Manager

log = logging.getLogger("worldline.serve")
MAX_CHECKPOINTS = 32  # per session; the oldest is forgotten past this
MAX_WINDOW = 16  # frames in flight a client may ask for
COMMANDS = ("start", "action", "step", "pause", "resume", "reset", "checkpoint", "restore", "branch", "record", "text",
            "fps", "ack", "ping")
_STOP, _KICK = object(), object()  # worker-queue signals: end the session; an action arrived


@dataclasses.dataclass
class Moment:
    """Everything needed to continue a session from one moment (a checkpoint, a branch point)."""

    world: World
    state: State
    frame: np.ndarray  # (H, W, 3) uint8, the picture at this moment
    t: int  # frames generated since the start
    action: torch.Tensor  # (1, A) the action held
    recent: deque  # (frame (3, H, W), action (A,)) of the last few steps, for a prompt that re-reads the context
    text: str | None = None
    twin_seed: int | None = None  # the real env: its reset seed and every action since (None: no twin)
    twin_actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    twin_synced: bool = False

    def copy(self) -> "Moment":
        return dataclasses.replace(self, state=self.state.clone(), action=self.action.clone(),
                                   recent=deque(self.recent, maxlen=self.recent.maxlen), twin_actions=list(self.twin_actions))


class Session:
    def __init__(self, manager: "Manager"):
        self.id = secrets.token_hex(4)
        self.manager = manager
        self.config = manager.config
        # asyncio side
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()  # the sender has something to send
        self.outbox: deque[str] = deque()
        self.slot: tuple[dict, list[bytes]] | None = None  # the newest frame not yet sent
        self.dropped = 0
        self.window = 0  # frames a client lets be in flight (0: no acks, no limit)
        self.in_flight = 0
        # shared: written by the receiver, read by the worker (one reference assignment each)
        self.world: World | None = None
        self.held: tuple[torch.Tensor, int] = (torch.zeros(1, 0), 0)  # (action (1, A), its sequence number)
        # the worker's own
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=f"play-{self.id}", daemon=True)
        self.now: Moment | None = None
        self.origin: Moment | None = None  # where reset returns to
        self.twin: Twin | None = None
        self.checkpoints: dict[str, Moment] = {}
        self.recording: dict[str, Any] | None = None
        self.running = False
        self.fps = 0.0
        self.last_step = 0.0
        self.kicked = False

    # ------------------------------------------------------------------------------------------
    # asyncio side: receiver and sender
    # ------------------------------------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread.start()
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            await self._receive_loop(ws)
        finally:
            self.jobs.put(_STOP)  # the worker finishes what it is doing, closes the real env and ends
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _receive_loop(self, ws: WebSocket) -> None:
        while True:
            try:
                message = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            request: dict[str, Any] = {}
            try:
                request = self._parse(message)
                await self._handle(request)
            except WorldlineError as e:
                self.reply(request, "error", message=str(e))
            except Exception as e:  # a bug must not end the session; the client sees what failed
                log.exception("session %s: %s failed", self.id, request.get("type"))
                self.reply(request, "error", message=f"internal error in {request.get('type')!r}: {type(e).__name__}: {e}")

    def _parse(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("bytes") is not None:
            raise WorldlineError("binary messages are not accepted: send JSON text")
        text = message.get("text") or ""
        size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > self.config.max_message_bytes else len(text)
        if size > self.config.max_upload_bytes:
            raise WorldlineError(f"message of {size} bytes is larger than the {self.config.max_upload_bytes}-byte limit")
        try:
            request = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise WorldlineError(f"message is not valid JSON ({getattr(e, 'msg', 'too deeply nested')})") from None
        if not isinstance(request, dict):
            raise WorldlineError(f"a message must be a JSON object, got {type(request).__name__}")
        kind = request.get("type")
        if kind not in COMMANDS:
            raise WorldlineError(f"unknown message type {str(kind)[:40]!r} (known: {', '.join(COMMANDS)})")
        uploads = kind == "start" and ("image" in request or "video" in request)
        if size > self.config.max_message_bytes and not uploads:
            raise WorldlineError(f"{kind!r} message of {size} bytes is larger than the {self.config.max_message_bytes}-byte limit")
        return request

    async def _handle(self, request: dict[str, Any]) -> None:
        kind = request["type"]
        if kind == "ping":
            self.reply(request, "pong", t=request.get("t"))
        elif kind == "ack":
            self.in_flight = max(0, self.in_flight - 1)
            self.wake.set()
        elif kind == "action":  # the hot path: no round trip through the worker
            if self.world is None:
                raise WorldlineError("'action' before 'start': start a session first")
            self.held = (parse_action(self.world.spec, request), _seq(request, self.held[1]))
            self.jobs.put(_KICK)
        else:
            if kind == "start":
                window = request.get("window", 0)
                if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= MAX_WINDOW:
                    raise WorldlineError(f"'window' must be an integer in 0..{MAX_WINDOW} (frames in flight; 0: no acks), got {str(window)[:40]!r}")
                self.window, self.in_flight = window, 0
            result = await self.call(getattr(self, f"_{kind}"), request)
            if result is not None:
                self.reply(request, result[0], **result[1])

    async def call(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread, between two steps."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.put((fn, args, future))
        return await asyncio.wrap_future(future)

    async def _send_loop(self, ws: WebSocket) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.outbox:
                    await ws.send_text(self.outbox.popleft())
                if self.slot is not None and (self.window == 0 or self.in_flight < self.window):
                    (header, pictures), self.slot = self.slot, None
                    self.in_flight += 1
                    await ws.send_bytes(codec.pack(dict(header, drop=self.dropped), *pictures))
        except Exception:  # a closed socket, however the server reports it
            return  # the receiver sees the disconnect and ends the session

    def reply(self, request: dict[str, Any], kind: str, **fields: Any) -> None:
        message = {"type": kind, **fields}
        if isinstance(request, dict) and "id" in request and isinstance(request["id"], (int, str)):
            message["id"] = request["id"]
        self.outbox.append(json.dumps(message))
        self.wake.set()

    def publish(self, frame: tuple[dict, list[bytes]]) -> None:
        if self.slot is not None:
            self.dropped += 1
        self.slot = frame
        self.wake.set()

    # ------------------------------------------------------------------------------------------
    # the worker thread: the real-time loop
    # ------------------------------------------------------------------------------------------

    def _work(self) -> None:
        with torch.no_grad():
            while True:
                wait = self._until_next_step()
                try:
                    job = self.jobs.get(timeout=wait) if wait is None or wait > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    job = None
                if job is _STOP:
                    self._close_twin()
                    return
                if job is _KICK:
                    self.kicked = True
                elif job is not None:
                    fn, args, future = job
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn(*args))
                        except BaseException as e:  # handed to the awaiting receiver, which replies
                            future.set_exception(e)
                elif self.running and self.now is not None:
                    self._tick()

    def _until_next_step(self) -> float | None:
        """Seconds until the next step is due; None while paused."""
        if not self.running or self.now is None:
            return None
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        due = self.last_step + (period / 2 if self.kicked else period)
        return max(0.0, due - time.perf_counter())

    def _tick(self) -> None:
        self.kicked = False
        self.last_step = time.perf_counter()
        try:
            self._emit(self._advance())
        except Exception as e:  # a failing model pauses this session and says why
            self.running = False
            if not isinstance(e, WorldlineError):
                log.exception("session %s: step failed", self.id)
            self._notify("error", message=f"step failed, paused: {type(e).__name__}: {e}")
        self._check_recording_full()

    def _emit(self, frame: tuple[dict, list[bytes]]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.publish, frame)  # type: ignore[union-attr]
        except RuntimeError:  # the event loop is gone: the session is ending
            pass

    def _notify(self, kind: str, **fields: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(lambda: self.reply({}, kind, **fields))  # type: ignore[union-attr]
        except RuntimeError:
            pass

    # ------------------------------------------------------------------------------------------
    # commands (on the worker thread); each returns (reply type, fields) or None
    # ------------------------------------------------------------------------------------------

    def _started(self) -> Moment:
        if self.now is None:
            raise WorldlineError("a command before 'start': start a session first (send {\"type\": \"start\"})")
        return self.now

    def _start(self, request: dict[str, Any]):
        world = self.manager.default_world
        if "ckpt" in request or "data" in request:
            world = self.manager.world_for(request.get("ckpt"), request.get("data"))
        if world is None:
            raise WorldlineError("this server has no default model: give 'ckpt' (a checkpoint directory)")
        text = self._prompt(world, request["text"]) if request.get("text") else None
        fps = _check_fps(request["fps"]) if request.get("fps") is not None else None
        seq = _seq(request, 0)
        moment = self.manager.branch(request["branch"]) if "branch" in request else self._begin(world, request, text)
        self.running = False
        self.origin = moment
        self.checkpoints.clear()
        self.recording = None
        self.fps = fps if fps is not None else self.config.fps if self.config.fps is not None else moment.world.fps
        self._jump(moment)
        self.world = self.now.world  # type: ignore[union-attr]
        self.held = (self.now.action, seq)  # type: ignore[union-attr]
        self.running = not request.get("paused", False)
        self.last_step = time.perf_counter()
        now = self.now
        assert now is not None
        return "started", dict(session=self.id, frame=now.t, fps=self.fps, action=now.action[0].tolist(), real=self.twin is not None,
                               synced=now.twin_synced, text=now.text, model=now.world.info())

    def _step(self, request: dict[str, Any]):
        now = self._started()
        given = "action" in request or "name" in request
        action = parse_action(now.world.spec, request) if given else self.held[0]
        self.held = (action, _seq(request, self.held[1]))
        self._emit(self._advance())
        self._check_recording_full()
        return None  # the frame is the answer

    def _pause(self, request: dict[str, Any]):
        self.running = False
        return "paused", {"frame": self._started().t}

    def _resume(self, request: dict[str, Any]):
        now = self._started()
        self.running = True
        self.last_step = 0.0  # the first step is due now
        return "resumed", {"frame": now.t}

    def _fps(self, request: dict[str, Any]):
        self.fps = _check_fps(request.get("fps"))
        return "fps", {"fps": self.fps}

    def _reset(self, request: dict[str, Any]):
        self._started()
        self._jump(self.origin)  # type: ignore[arg-type]
        return "reset", {"frame": self.now.t}  # type: ignore[union-attr]

    def _checkpoint(self, request: dict[str, Any]):
        now = self._started()
        name = f"c{len(self.checkpoints) + 1}"
        while name in self.checkpoints:
            name = f"c{secrets.token_hex(2)}"
        self.checkpoints[name] = now.copy()
        while len(self.checkpoints) > MAX_CHECKPOINTS:
            self.checkpoints.pop(next(iter(self.checkpoints)))
        return "checkpointed", {"checkpoint": name, "frame": now.t}

    def _named_checkpoint(self, request: dict[str, Any]) -> Moment:
        self._started()
        name = request.get("checkpoint")
        if not isinstance(name, str) or name not in self.checkpoints:
            known = ", ".join(self.checkpoints) or "none yet"
            raise WorldlineError(f"unknown checkpoint {str(name)[:40]!r} (this session has: {known})")
        return self.checkpoints[name]

    def _restore(self, request: dict[str, Any]):
        self._jump(self._named_checkpoint(request))
        return "restored", {"checkpoint": request["checkpoint"], "frame": self.now.t}  # type: ignore[union-attr]

    def _branch(self, request: dict[str, Any]):
        token = self.manager.add_branch(self._named_checkpoint(request).copy())
        return "branched", {"checkpoint": request["checkpoint"], "branch": token, "url": f"/?branch={token}"}

    def _jump(self, moment: Moment) -> None:
        """Continue from ``moment`` (a copy: the checkpoint stays as it was)."""
        self.now = moment.copy()
        self.held = (self.now.action, self.held[1])
        self._rebuild_twin()
        if self.recording is not None:
            start = self.recording["t0"]
            keep = self.now.t - start
            if keep < 0 or keep > len(self.recording["actions"]):
                self.recording = self._new_recording()  # jumped to before (or off) the recorded line: record from here
            else:
                del self.recording["actions"][keep:]
                del self.recording["frames"][keep + 1 :]
        self._emit(self._picture(0.0))

    def _record(self, request: dict[str, Any]):
        self._started()
        on = request.get("on")
        if not isinstance(on, bool):
            raise WorldlineError("'record' needs \"on\": true or false")
        if self.config.record_dir is None:
            raise WorldlineError("recording is off on this server (start it with --record-dir DIR)")
        if on:
            self.recording = self._new_recording()
            return "recording", {"on": True, "path": str(self.config.record_dir)}
        if self.recording is None:
            raise WorldlineError("not recording: send {\"type\": \"record\", \"on\": true} first")
        return "recorded", self._finish_recording()

    def _new_recording(self) -> dict[str, Any]:
        now = self._started()
        return {"t0": now.t, "frames": [now.frame], "actions": [], "task": now.text or f"play {now.world.name}"}

    def _check_recording_full(self) -> None:
        if self.recording is not None and len(self.recording["actions"]) >= self.config.max_record_frames:
            try:
                self._notify("recorded", **self._finish_recording(f"the {self.config.max_record_frames}-frame limit"))
            except Exception as e:
                self._notify("error", message=f"recording not saved: {e}")

    def _finish_recording(self, reason: str | None = None) -> dict[str, Any]:
        rec, self.recording = self.recording, None
        assert rec is not None
        if not rec["actions"]:
            raise WorldlineError("nothing was recorded: step the world at least once while recording")
        episode = self.manager.write_recording(self._started().world, rec)
        return {"path": str(self.config.record_dir), "episode": episode, "frames": len(rec["actions"]), "reason": reason}

    def _text(self, request: dict[str, Any]):
        now = self._started()
        prompt = self._prompt(now.world, request.get("text"))
        self._set_text(prompt)
        return "text", {"text": prompt, "frame": now.t}

    def _prompt(self, world: World, text: Any) -> str:
        from worldline.text.guardrail import check_prompt

        prompt = check_prompt(text)  # the guardrail runs first, whatever the model
        if not world.takes_text:
            raise WorldlineError(f"{world.name} was not trained with text: it takes no prompt")
        return prompt

    # ------------------------------------------------------------------------------------------
    # work on the worker thread
    # ------------------------------------------------------------------------------------------

    def _begin(self, world: World, request: dict[str, Any], text: str | None) -> Moment:
        """The moment a 'start' message describes: context frames -> init_state, and the twin plan."""
        K, size = world.context_frames, world.image_size
        spec = world.spec
        action = torch.tensor([world.default_action()], dtype=torch.float32)  # (1, A)
        ctx_actions = None
        twin_seed, twin_actions, expected = None, [], None
        if "image" in request:
            frames = decode_image(request["image"], size, self.config.max_upload_pixels)
        elif "video" in request:
            frames = decode_video(request["video"], size, K, self.config.max_upload_pixels)
        elif "env_seed" in request or (world.dataset is None and world.env_id is not None and "episode" not in request):
            if world.env_id is None:
                raise WorldlineError("'env_seed' needs a real world: this dataset names no built-in env")
            twin_seed = request.get("env_seed", 0)
            if isinstance(twin_seed, bool) or not isinstance(twin_seed, int) or twin_seed < 0:
                raise WorldlineError(f"'env_seed' must be an integer >= 0, got {str(twin_seed)[:40]!r}")
            frames = None  # the env's first picture, made below
        else:
            index = request.get("episode", self.config.episode if world is self.manager.default_world else 0)
            ep = world.episode(index)
            T = len(ep["frames"])
            f = request.get("frame", min(K, T) - 1)
            if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < T:
                raise WorldlineError(f"'frame' {str(f)[:40]} is outside episode {index} (0..{T - 1})")
            lo = max(0, f - K + 1)
            frames = ep["frames"][lo : f + 1]  # (T, H, W, 3)
            if f > lo and spec.kind != "none":
                ctx_actions = torch.from_numpy(ep["actions"][lo:f]).float()[None]  # (1, T - 1, A)
            if spec.kind == "continuous" and world.controls.get("mode") == "pointer":
                action = torch.from_numpy(ep["actions"][f]).float()[None]  # the pointer continues where the player was
            if world.env_id is not None and size[0] == size[1]:
                twin_seed, twin_actions, expected = index, list(ep["actions"][:f]), ep["frames"][f]
        self._close_twin()
        synced = False
        if twin_seed is not None and world.env_id is not None and self.config.real_env:
            self.twin = Twin(world.env_id, size[0], spec)
            real = self.twin.reset(twin_seed, twin_actions)
            if frames is None:
                frames = real[None]
                synced = True
            else:
                synced = bool(psnr(real, expected) >= SYNC_PSNR_DB)
        if frames is None:
            raise WorldlineError("the real world is off on this server: start from an episode, an image or a video")
        context = codec.to_tensor(frames)[None]  # (1, T, 3, H, W)
        state = world.model.init_state(context, ctx_actions, [text] if text else None)
        recent: deque = deque(maxlen=K)
        for i in range(len(frames)):
            a = ctx_actions[0, i - 1] if (ctx_actions is not None and i > 0) else torch.tensor(world.default_action())
            recent.append((context[0, i], a))
        return Moment(world, state, frames[-1], 0, action, recent, text,
                      twin_seed if self.twin is not None else None, twin_actions if self.twin is not None else [], synced)

    def _close_twin(self) -> None:
        if self.twin is not None:
            self.twin.close()
            self.twin = None

    def _rebuild_twin(self) -> None:
        """Bring the real env to the current moment (reset + replay), or drop it."""
        now = self.now
        assert now is not None
        if now.twin_seed is None or now.world.env_id is None or not self.config.real_env:
            self._close_twin()
            return
        if self.twin is None or self.twin.info.env_id != now.world.env_id:
            self._close_twin()
            self.twin = Twin(now.world.env_id, now.world.image_size[0], now.world.spec)
        twin = self.twin
        on_the_way = twin.seed == now.twin_seed and len(twin.actions) <= len(now.twin_actions) and all(
            np.array_equal(a, b) for a, b in zip(twin.actions, now.twin_actions))
        if on_the_way:  # the env already passed through an earlier point of this line: walk on
            for a in now.twin_actions[len(twin.actions):]:
                twin.step(a)
        else:
            twin.reset(now.twin_seed, now.twin_actions)

    def _advance(self) -> tuple[dict, list[bytes]]:
        """One world step with the held action -> the frame message for it."""
        start = time.perf_counter()
        now = self._started()
        action, seq = self.held
        state, frame = now.world.model.step(now.state, action)
        now.state = state
        now.frame = codec.to_uint8(frame)
        now.t += 1
        now.action = action
        now.recent.append((frame[0].float(), action[0]))
        row = action[0].numpy().astype(np.float32)
        if self.twin is not None:
            self.twin.step(row)
            now.twin_actions.append(row)
        if self.recording is not None:
            self.recording["actions"].append(row)
            self.recording["frames"].append(now.frame)
        return self._picture((time.perf_counter() - start) * 1000, seq)

    def _picture(self, ms: float, seq: int | None = None) -> tuple[dict, list[bytes]]:
        now = self.now
        assert now is not None
        enc, q = self.config.encoding, self.config.quality
        pictures = [codec.encode(now.frame, enc, q)]
        if self.twin is not None:
            pictures.append(codec.encode(self.twin.frame, enc, q))
        H, W = now.frame.shape[:2]
        header = {"i": now.t, "seq": self.held[1] if seq is None else seq, "ms": round(ms, 2), "fmt": enc, "h": H, "w": W,
                  "real_done": bool(self.twin.done) if self.twin is not None else None,
                  "rec": len(self.recording["actions"]) if self.recording is not None else None}
        return header, pictures

    def _set_text(self, prompt: str) -> None:
        """A world event: the prompt conditions every step from the next one on. A family may offer
        ``set_text(state, [prompt]) -> state``; otherwise the state is rebuilt from the recent
        frames and actions with the new prompt."""
        now = self.now
        assert now is not None
        model = now.world.model
        if hasattr(model, "set_text"):
            now.state = model.set_text(now.state, [prompt])
        else:
            frames = torch.stack([f for f, _ in now.recent])[None]  # (1, T, 3, H, W)
            actions = torch.stack([a for _, a in now.recent][1:])[None] if len(now.recent) > 1 and now.world.spec.kind != "none" else None
            now.state = model.init_state(frames, actions, [prompt])  # (1, T - 1, A) actions between them
        now.text = prompt


def _seq(request: dict[str, Any], current: int) -> int:
    seq = request.get("seq", current)
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise WorldlineError(f"'seq' must be an integer, got {str(seq)[:40]!r}")
    return seq


def _check_fps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 240:
        raise WorldlineError(f"'fps' must be a number in [0, 240] (0: as fast as the model allows), got {str(value)[:40]!r}")
    return float(value)


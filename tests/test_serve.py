"""The play server: controls from action spaces, frame codecs, the guardrail, and sessions driven
through FastAPI's test client (start, step, checkpoint, restore, branch, record, text, bad input)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from _data_helpers import make_frames  # noqa: E402
from _serve_helpers import Reader, ToyModel, debug_model, pixels, starlette_receive, write_dataset  # noqa: E402
from worldline.core.contracts import ActionSpec  # noqa: E402
from worldline.core.errors import WorldlineError  # noqa: E402
from worldline.data.format import Dataset  # noqa: E402
from worldline.serve import ServeConfig, World, codec, create_app  # noqa: E402
from worldline.serve.config import allowed_path  # noqa: E402
from worldline.serve.controls import build_controls, default_action, parse_action  # noqa: E402
from worldline.text.guardrail import check_prompt  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "data"
    episodes = write_dataset(path)
    return path, episodes


@pytest.fixture(scope="module")
def world(data):
    torch.set_num_threads(1)
    return World(debug_model(), Dataset(data[0]), name="debug", meta={"type": "deterministic", "preset": "wm-deterministic", "size": "debug"})


OPEN: list = []  # sessions to close before the test client stops (else its exit waits for them)


@contextlib.contextmanager
def serve(world, **config):
    """A test client of a play server; every session opened in it is closed on the way out, also
    when an assertion failed."""
    with TestClient(create_app(ServeConfig(**config), world)) as client:
        try:
            yield client
        finally:
            while OPEN:
                OPEN.pop().close()


class Play:
    """A test-client WebSocket session: send, read, step, close."""

    def __init__(self, client, headers=None):
        self._cm = client.websocket_connect("/ws", headers=headers or {})
        self.ws = self._cm.__enter__()
        self.closed = False
        OPEN.append(self)
        self.reader = Reader(starlette_receive(self.ws))
        self.send_json, self.send_text, self.send_bytes = self.ws.send_json, self.ws.send_text, self.ws.send_bytes
        self.expect = self.reader.expect

    def start(self, **start):
        self.send_json({"type": "start", "paused": True, **start})
        reply, frames = self.expect("started", frames=1)
        return reply, frames[0]

    def step(self, action, seq=None):
        msg = {"type": "step", "action": action}
        if seq is not None:
            msg["seq"] = seq
        self.send_json(msg)
        return self.expect(frames=1)[1][0]

    def error(self, raw=None):
        if raw is not None:
            self.send_text(raw)
        return self.expect("error", allow_error=True)[0]["message"]

    def close(self):
        if not self.closed:
            self.closed = True
            self._cm.__exit__(None, None, None)


def session(client, **start):
    """Open a session and start it paused; returns (play, started reply, first frame)."""
    play = Play(client)
    reply, first = play.start(**start)
    return play, reply, first


def reference(world, episode, actions, frame=None):
    """The frames model.step gives for ``actions`` after the context the server builds."""
    ep = world.episode(episode)
    K = world.context_frames
    f = K - 1 if frame is None else frame
    lo = max(0, f - K + 1)
    ctx = codec.to_tensor(ep["frames"][lo : f + 1])[None]
    ctx_actions = torch.from_numpy(ep["actions"][lo:f])[None] if f > lo else None
    out = []
    with torch.no_grad():
        state = world.model.init_state(ctx, ctx_actions)
        for a in actions:
            state, frame_ = world.model.step(state, torch.tensor([a], dtype=torch.float32))
            out.append(codec.to_uint8(frame_))
    return out


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------


def test_discrete_controls_from_names():
    spec = ActionSpec(kind="discrete", dim=1, n=6, names=["NOOP", "FIRE", "RIGHT", "LEFT", "UPLEFT", "jump"])
    c = build_controls(spec)
    keys = {a["name"]: a["keys"] for a in c["actions"]}
    assert keys["NOOP"] == [] and keys["FIRE"] == ["Space"] and keys["RIGHT"] == ["ArrowRight"]
    assert sorted(keys["UPLEFT"]) == ["ArrowLeft", "ArrowUp"]
    assert keys["jump"] == ["Digit1"]  # a name that is no direction gets a number key
    assert c["default"] == [0.0]
    unnamed = build_controls(ActionSpec(kind="discrete", dim=1, n=3))  # latent actions: number keys
    assert [a["keys"] for a in unnamed["actions"]] == [["Digit1"], ["Digit2"], ["Digit3"]]
    assert default_action(ActionSpec(kind="discrete", dim=1, n=2, names=["FIRE", "NOOP"])) == [1.0]


def test_continuous_controls():
    pusht = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0], names=["x", "y"])
    c = build_controls(pusht, env_id="pusht")
    assert c["mode"] == "pointer" and c["default"] == [0.0, 0.0]
    torques = ActionSpec(kind="continuous", dim=3, low=[-1.0] * 3, high=[1.0] * 3, names=["a", "b", "c"])
    c = build_controls(torques)
    assert c["mode"] == "keys" and c["default"] == [0.0, 0.0, 0.0]
    assert [(a["neg"], a["pos"]) for a in c["axes"]][:2] == [("ArrowLeft", "ArrowRight"), ("ArrowDown", "ArrowUp")]
    offset = ActionSpec(kind="continuous", dim=1, low=[2.0], high=[4.0])
    assert default_action(offset) == [3.0]


def test_parse_action_checks_the_space():
    disc = ActionSpec(kind="discrete", dim=1, n=4, names=["NOOP", "FIRE", "RIGHT", "LEFT"])
    assert parse_action(disc, {"name": "LEFT"}).tolist() == [[3.0]]
    assert parse_action(disc, {"action": 2}).tolist() == [[2.0]]
    box = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])
    assert parse_action(box, {"action": [1, 511.5]}).tolist() == [[1.0, 511.5]]
    for spec, msg, needle in [
        (disc, {"name": "JUMP"}, "unknown action name 'JUMP'"),
        (disc, {"action": 4}, "outside the space"),
        (disc, {"action": 1.5}, "outside the space"),
        (box, {"action": [600, 1]}, "action[0] = 600 is outside the space [0, 512]"),
        (box, {"action": [1]}, "list of 2 numbers"),
        (box, {"action": [1, float("nan")]}, "not a finite number"),
        (box, {"action": [True, 1]}, "not a finite number"),
        (box, {"action": ["1", 1]}, "not a finite number"),
        (box, {"name": "x"}, "discrete"),
        (box, {}, "needs 'action'"),
    ]:
        with pytest.raises(WorldlineError, match=__import__("re").escape(needle)):
            parse_action(spec, msg)


def test_guardrail():
    assert check_prompt("  it starts   to rain ") == "it starts to rain"
    assert check_prompt("the ball turns red; Sussex skyline") == "the ball turns red; Sussex skyline"
    for bad in ["show GORE everywhere", "g.o.r.e", "n\u200bude figures", "self harm", "a suicide bomber"]:
        with pytest.raises(WorldlineError, match="guardrail"):
            check_prompt(bad)
    with pytest.raises(WorldlineError, match="characters"):
        check_prompt("x" * 301)
    with pytest.raises(WorldlineError, match="string"):
        check_prompt(5)


def test_codecs_round_trip():
    frame = make_frames(1, 0, size=64)[0]  # (64, 64, 3) a gradient with a sprite
    assert np.array_equal(codec.decode(codec.encode(frame, "raw"), "raw", (64, 64)), frame)
    assert np.array_equal(codec.decode(codec.encode(frame, "png"), "png"), frame)
    sizes = {}
    for enc in ("jpeg", "webp"):
        data = codec.encode(frame, enc, 90)
        sizes[enc] = len(data)
        back = codec.decode(data, enc)
        mse = np.mean((back.astype(float) - frame) ** 2)
        assert back.shape == frame.shape and 10 * np.log10(255**2 / mse) > 25
    assert sizes["jpeg"] < frame.nbytes
    header, pics = codec.unpack(codec.pack({"i": 3}, b"abc", b"de"))
    assert header["i"] == 3 and header["sizes"] == [3, 2] and pics == [b"abc", b"de"]
    t = torch.rand(1, 3, 8, 8) * 2 - 1
    assert (codec.to_tensor(codec.to_uint8(t)) - t[0]).abs().max() <= 1 / 127.5 + 1e-6


def test_allowed_paths(tmp_path):
    inside, outside = tmp_path / "ok", tmp_path / "no"
    (inside / "ckpt").mkdir(parents=True)
    outside.mkdir()
    (inside / "link").symlink_to(outside)
    assert allowed_path(inside / "ckpt", [inside], "checkpoint") == (inside / "ckpt").resolve()
    assert allowed_path(str(inside / "ckpt" / ".." / "ckpt"), [inside], "checkpoint") == (inside / "ckpt").resolve()
    for bad in [outside, inside / ".." / "no", inside / "link"]:  # outside, escaping by .., escaping by a symlink
        with pytest.raises(WorldlineError, match="outside the allowed directories"):
            allowed_path(bad, [inside], "checkpoint")


# ------------------------------------------------------------------------------------------------
# sessions
# ------------------------------------------------------------------------------------------------


def test_page_and_info(world):
    with serve(world) as client:
        page = client.get("/")
        assert page.status_code == 200 and "play.js" in page.text
        assert "WebSocket" in client.get("/static/play.js").text
        info = client.get("/api/info").json()
    assert info["model"]["family"] == "deterministic" and info["model"]["preset"] == "wm-deterministic/debug"
    assert info["model"]["controls"]["kind"] == "continuous" and info["model"]["dataset"]["episodes"] == 2
    assert info["server"]["max_sessions"] == 4


def test_start_and_step_match_the_model(world):
    actions = [[100.0, 400.0], [300.0, 20.0], [511.0, 0.0]]
    with serve(world, encoding="raw") as client:
        ws, started, first = session(client, episode=1)
        assert started["session"] and started["model"]["name"] == "debug" and not started["real"]
        assert first[0]["i"] == 0 and np.array_equal(pixels(first), world.episode(1)["frames"][world.context_frames - 1])
        got = [ws.step(a, seq=i + 1) for i, a in enumerate(actions)]
        ws.close()
    assert [h["i"] for h, _ in got] == [1, 2, 3] and [h["seq"] for h, _ in got] == [1, 2, 3]
    for frame, want in zip(got, reference(world, 1, actions)):
        assert np.array_equal(pixels(frame), want)
    assert not np.array_equal(pixels(got[0]), pixels(got[2]))


def test_start_from_a_chosen_frame(world):
    with serve(world, encoding="raw") as client:
        ws, _, first = session(client, episode=0, frame=7)
        assert np.array_equal(pixels(first), world.episode(0)["frames"][7])
        got = ws.step([10.0, 10.0])
        ws.close()
    assert np.array_equal(pixels(got), reference(world, 0, [[10.0, 10.0]], frame=7)[0])


def test_checkpoint_restore_branch(world):
    a, b = [[50.0, 60.0], [400.0, 400.0]], [[500.0, 10.0], [10.0, 500.0]]
    with serve(world, encoding="raw") as client:
        ws, _, _ = session(client)
        ws.step([200.0, 200.0])
        ws.send_json({"type": "checkpoint", "id": 7})
        ck, _ = ws.expect("checkpointed")
        assert ck["id"] == 7 and ck["frame"] == 1
        future_a = [pixels(ws.step(x)) for x in a]
        ws.send_json({"type": "restore", "checkpoint": ck["checkpoint"]})
        restored, frames = ws.expect("restored", frames=1)
        assert restored["frame"] == 1 and frames[0][0]["i"] == 1
        again_a = [pixels(ws.step(x)) for x in a]
        ws.send_json({"type": "restore", "checkpoint": ck["checkpoint"]})
        ws.expect("restored", frames=1)
        future_b = [pixels(ws.step(x)) for x in b]
        ws.send_json({"type": "branch", "checkpoint": ck["checkpoint"]})
        branched, _ = ws.expect("branched")
        assert branched["url"].endswith(branched["branch"])
        # the branch is its own session: it continues from the checkpoint whatever the parent does next
        ws.step([0.0, 0.0])
        ws2, started2, first2 = session(client, branch=branched["branch"])
        assert started2["session"] != ck.get("session") and first2[0]["i"] == 1
        branch_a = [pixels(ws2.step(x)) for x in a]
        ws.send_json({"type": "reset"})
        _, frames = ws.expect("reset", frames=1)
        assert frames[0][0]["i"] == 0
        ws2.close()
        ws.close()
    assert all(np.array_equal(x, y) for x, y in zip(future_a, again_a))
    assert all(np.array_equal(x, y) for x, y in zip(future_a, branch_a))
    assert not np.array_equal(future_a[-1], future_b[-1])


def test_record_writes_a_dataset(world, tmp_path):
    out = tmp_path / "rec"
    with serve(world, encoding="raw", record_dir=out) as client:
        ws, _, first = session(client)
        ws.send_json({"type": "record", "on": True})
        ws.expect("recording")
        actions = [[10.0, 20.0], [30.0, 40.0], [500.0, 500.0]]
        shown = [pixels(first)] + [pixels(ws.step(a)) for a in actions]
        ws.send_json({"type": "record", "on": False})
        rec, _ = ws.expect("recorded")
        assert rec["episode"] == 0 and rec["frames"] == 3
        ws.send_json({"type": "record", "on": True})
        ws.expect("recording")
        ws.send_json({"type": "record", "on": False})  # nothing stepped: an error, and nothing written
        err, _ = ws.expect("error", allow_error=True)
        assert "nothing was recorded" in err["message"]
        ws.send_json({"type": "record", "on": True})
        ws.expect("recording")
        ws.step([1.0, 1.0])
        ws.send_json({"type": "record", "on": False})
        rec2, _ = ws.expect("recorded")
        assert rec2["episode"] == 1
        ws.close()
    ds = Dataset(out)
    assert ds.num_episodes == 2 and list(ds.episode_lengths) == [3, 1]
    ep = ds.episode(0)
    assert np.allclose(ep["actions"], actions)
    # frame t is the picture before action t (the recorder's convention); H.264 is lossy
    err = np.abs(ep["frames"].astype(float) - np.stack(shown[:3]).astype(float)).mean()
    assert err < 6, err


def test_bad_input_keeps_the_session(world):
    with serve(world, encoding="raw", max_message_bytes=2048, max_upload_bytes=4096) as client:
        ws = Play(client)
        ws.send_json({"type": "step", "action": [1, 1]})
        assert "before 'start'" in ws.expect("error", allow_error=True)[0]["message"]
        ws.send_json({"type": "start", "paused": True})
        ws.expect("started", frames=1)
        cases = [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            (json.dumps({"type": "fly"}), "unknown message type 'fly'"),
            (json.dumps({"type": "action", "action": [1, 2], "pad": "x" * 3000}), "larger than the 2048-byte limit"),
            (json.dumps({"type": "start", "image": "x" * 5000}), "larger than the 4096-byte limit"),
            (json.dumps({"type": "action", "action": [1, 2, 3]}), "list of 2 numbers"),
            (json.dumps({"type": "action", "action": [-5, 2]}), "outside the space"),
            (json.dumps({"type": "action", "name": "LEFT"}), "discrete"),
            (json.dumps({"type": "restore", "checkpoint": "c9"}), "unknown checkpoint 'c9'"),
            (json.dumps({"type": "branch", "checkpoint": 3}), "unknown checkpoint"),
            (json.dumps({"type": "start", "branch": "nope"}), "unknown branch"),
            (json.dumps({"type": "start", "episode": 99}), "episode 99 is outside the dataset"),
            (json.dumps({"type": "start", "episode": 0, "frame": 500}), "'frame' 500 is outside episode 0"),
            (json.dumps({"type": "start", "image": "%%%"}), "not valid base64"),
            (json.dumps({"type": "start", "image": base64.b64encode(b"not a png").decode()}), "could not be read"),
            (json.dumps({"type": "start", "env_seed": 1}), "needs a real world"),
            (json.dumps({"type": "fps", "fps": -1}), "'fps' must be"),
            (json.dumps({"type": "record", "on": True}), "recording is off"),
            (json.dumps({"type": "text", "text": "it rains"}), "takes no prompt"),
            (json.dumps({"type": "text", "text": "gore"}), "guardrail"),
            (json.dumps({"type": "step", "seq": "x"}), "'seq' must be an integer"),
        ]
        for raw, needle in cases:
            ws.send_text(raw)
            err, _ = ws.expect("error", allow_error=True)
            assert needle in err["message"], (raw[:60], err["message"])
            assert "\n" not in err["message"]
        ws.send_bytes(b"\x00\x01")
        assert "binary" in ws.expect("error", allow_error=True)[0]["message"]
        ws.send_json({"type": "ping", "t": 5, "id": "p"})
        pong, _ = ws.expect("pong")
        assert pong == {"type": "pong", "t": 5, "id": "p"}
        frame = ws.step([3.0, 4.0])  # the session still plays
        assert frame[0]["i"] == 1
        ws.close()


def test_upload_image_and_video(world):
    from PIL import Image

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    video = io.BytesIO()
    import av

    with av.open(video, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for t in range(5):
            img = np.full((64, 64, 3), 40 * t, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    with serve(world, encoding="raw") as client:
        ws, _, first = session(client, image=url)
        shown = pixels(first)
        assert shown.shape == (64, 64, 3)
        want = np.asarray(Image.fromarray(picture).resize((64, 64), Image.Resampling.BOX, box=(15, 0, 105, 90)))
        assert np.array_equal(shown, want)  # centre-cropped to square, then area-resized
        assert ws.step([1.0, 1.0])[0]["i"] == 1
        ws.send_json({"type": "start", "video": base64.b64encode(video.getvalue()).decode(), "paused": True})
        _, frames = ws.expect("started", frames=1)
        assert abs(float(pixels(frames[0]).mean()) - 160) < 8  # the last frame of the clip
        ws.close()


def test_too_many_sessions_and_foreign_origins(world):
    with serve(world, max_sessions=1, encoding="raw") as client:
        ws, _, _ = session(client)
        with client.websocket_connect("/ws") as other:
            msg = other.receive_json()
            assert msg["type"] == "error" and "too many sessions" in msg["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                other.receive_json()
            assert closed.value.code == 1013
        assert ws.step([1.0, 2.0])[0]["i"] == 1  # the first session is untouched
        ws.close()
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws3:
                ws3.receive_json()
        assert refused.value.code == 1008


def test_client_named_checkpoints_are_allow_listed(world, data, tmp_path):
    inside = tmp_path / "allowed"
    world.model.save_pretrained(inside / "wm")
    with serve(world, allowed_dirs=[inside], encoding="raw") as client:
        ws = Play(client)
        ws.send_json({"type": "start", "ckpt": str(tmp_path), "paused": True})
        assert "outside the allowed directories" in ws.expect("error", allow_error=True)[0]["message"]
        ws.send_json({"type": "start", "ckpt": str(inside / "wm" / ".." / ".." / "x"), "paused": True})
        assert "outside the allowed directories" in ws.expect("error", allow_error=True)[0]["message"]
        ws.send_json({"type": "start", "ckpt": str(inside / "wm"), "data": str(data[0]), "paused": True})
        assert "outside the allowed directories" in ws.expect("error", allow_error=True)[0]["message"]
        ws.send_json({"type": "start", "ckpt": str(inside / "wm"), "image": _png(64), "paused": True})
        started, _ = ws.expect("started", frames=1)
        assert started["model"]["name"] == "wm"
        assert ws.step([5.0, 5.0])[0]["i"] == 1
        ws.close()


def _png(size):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_text_events_reach_a_text_model():
    model = ToyModel()
    world = World(model, name="toy", meta={"type": "toy"})
    with serve(world, encoding="raw") as client:
        ws, started, _ = session(client, image=_png(16), text="sunny")
        assert started["text"] == "sunny" and started["model"]["text"]
        before = pixels(ws.step([0.0]))
        ws.send_json({"type": "text", "text": "a storm rolls in"})  # 16 characters: blue channel 0.2
        reply, _ = ws.expect("text")
        assert reply["text"] == "a storm rolls in"
        after = pixels(ws.step([0.0]))
        ws.send_json({"type": "text", "text": "nude"})
        assert "guardrail" in ws.expect("error", allow_error=True)[0]["message"]
        ws.close()
    assert model.texts[0] == ["sunny"] and model.texts[-1] == ["a storm rolls in"]
    assert before[..., 2].mean() != after[..., 2].mean()
    assert abs(after[..., 2].astype(float).mean() - 147) < 1  # (0.2 - 0.05 + 1) * 127.5: the prompt, then one step


def test_sessions_do_not_wait_for_each_other():
    """One session's step blocks inside the model; another session keeps playing meanwhile."""
    gate = threading.Event()
    world = World(ToyModel(gate), name="toy", meta={"type": "toy"})
    with serve(world, encoding="raw") as client:
        ws_a, _, _ = session(client, image=_png(16))
        ws_b, _, _ = session(client, image=_png(16))
        ws_a.send_json({"type": "step", "action": [1.0]})  # held at the gate
        frames_b = [ws_b.step([0.5]) for _ in range(3)]
        assert [h["i"] for h, _ in frames_b] == [1, 2, 3]
        ws_b.send_json({"type": "checkpoint"})
        ws_b.expect("checkpointed")
        gate.set()
        _, got = ws_a.expect(frames=1)
        assert got[0][0]["i"] == 1
        ws_a.close()
        ws_b.close()


def test_running_sessions_stream_and_report_seq(world):
    with serve(world, encoding="jpeg", fps=0) as client:
        ws, _, _ = session(client)
        ws.send_json({"type": "action", "action": [300.0, 300.0], "seq": 41})
        ws.send_json({"type": "resume"})
        _, frames = ws.expect("resumed", frames=6)
        assert frames[-1][0]["seq"] == 41 and frames[-1][0]["fmt"] == "jpeg"
        assert [h["i"] for h, _ in frames] == sorted(h["i"] for h, _ in frames)
        ws.send_json({"type": "pause"})
        paused, _ = ws.expect("paused")
        ws.close()
    assert paused["frame"] >= 6


def test_cli_play_checks_paths_and_warns_on_host(world, data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import uvicorn
    from worldline.cli.main import app

    ckpt = tmp_path / "run" / "final"
    world.model.save_pretrained(ckpt)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: calls.append((app_, kw)))
    runner = CliRunner()
    res = runner.invoke(app, ["play", "--ckpt", str(ckpt), "--data", str(data[0]), "--allowed-dir", str(tmp_path / "run")])
    assert res.exit_code != 0 and isinstance(res.exception, WorldlineError) and "--data" in str(res.exception)
    res = runner.invoke(app, ["play", "--ckpt", str(ckpt), "--data", str(data[0]), "--host", "0.0.0.0", "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "0.0.0.0" in res.output
    assert calls and calls[0][1]["host"] == "0.0.0.0" and calls[0][1]["port"] == 8123
    res = runner.invoke(app, ["play", "--ckpt", str(ckpt), "--episode", "5", "--data", str(data[0])])
    assert isinstance(res.exception, WorldlineError) and "--episode 5" in str(res.exception)
    res = runner.invoke(app, ["play", "--ckpt", str(data[0])])
    assert isinstance(res.exception, WorldlineError)


def test_real_world_beside_the_dream(tmp_path):
    pytest.importorskip("gym_pusht")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from worldline.envs.recorder import record

    path = record("pusht", 2, tmp_path / "pusht", policy="random", max_steps=12, progress=False)
    world = World(debug_model(), Dataset(path), name="debug", meta={"type": "deterministic"})
    assert world.env_id == "pusht" and world.controls["mode"] == "pointer"
    ep = world.episode(1)
    with serve(world, encoding="raw") as client:
        ws, started, first = session(client, episode=1, frame=6)
        assert started["real"] and started["synced"], started
        assert started["action"] == pytest.approx(ep["actions"][6].tolist())  # the pointer starts where the player was
        assert len(first[1]) == 2
        ws.send_json({"type": "checkpoint"})
        ck, _ = ws.expect("checkpointed")
        moves = [[100.0, 100.0], [400.0, 300.0], [420.0, 310.0]]
        real_a = [codec.decode(ws.step(m)[1][1], "raw", (64, 64)) for m in moves]
        assert not np.array_equal(real_a[0], real_a[-1])  # the disc moves in the real world too
        ws.send_json({"type": "restore", "checkpoint": ck["checkpoint"]})
        _, frames = ws.expect("restored", frames=1)
        assert np.array_equal(codec.decode(frames[0][1][1], "raw", (64, 64)), codec.decode(first[1][1], "raw", (64, 64)))
        real_b = [codec.decode(ws.step(m)[1][1], "raw", (64, 64)) for m in moves]
        ws.send_json({"type": "start", "env_seed": 3, "paused": True})
        started, frames = ws.expect("started", frames=1)
        assert started["synced"] and np.array_equal(pixels(frames[0]), codec.decode(frames[0][1][1], "raw", (64, 64)))
        ws.close()
    assert all(np.array_equal(a, b) for a, b in zip(real_a, real_b))


def test_a_lagging_client_gets_the_newest_frame_not_a_queue(world):
    """With a window of one frame in flight, frames made while the client has not acknowledged the
    last one are dropped; the next frame it gets is the newest."""
    import time

    with serve(world, encoding="jpeg", fps=0) as client:
        ws = Play(client)
        ws.send_json({"type": "start", "window": 1})
        _, frames = ws.expect("started", frames=1)
        time.sleep(1.0)  # the world keeps running while the client does not read
        ws.send_json({"type": "ack"})
        _, more = ws.expect(frames=1)
        ws.send_json({"type": "pause"})
        ws.expect("paused")
        assert more[0][0]["i"] > frames[0][0]["i"] + 1 and more[0][0]["drop"] >= 1
        assert "window" in Play(client).error(json.dumps({"type": "start", "window": 99}))


def test_concurrent_clients_on_a_live_server(world):
    """Three real WebSocket clients at once, each stepping its own actions and then streaming flat
    out: each sees exactly its own world."""
    from websockets.sync.client import connect

    from _serve_helpers import live_server

    plans = {0: [[10.0, 10.0], [500.0, 20.0]], 1: [[250.0, 250.0], [0.0, 512.0]], 2: [[100.0, 300.0], [300.0, 100.0]]}
    results, errors = {}, []

    def player(url, ep):
        try:
            with connect(url, max_size=None) as ws:
                reader = Reader(lambda: ws.recv(timeout=60))
                ws.send(json.dumps({"type": "start", "paused": True, "episode": ep % 2, "window": 2}))
                reader.expect("started", frames=1)
                ws.send(json.dumps({"type": "ack"}))
                got = []
                for a in plans[ep]:
                    ws.send(json.dumps({"type": "step", "action": a}))
                    got.append(pixels(reader.expect(frames=1)[1][0]))
                    ws.send(json.dumps({"type": "ack"}))
                ws.send(json.dumps({"type": "fps", "fps": 0}))
                ws.send(json.dumps({"type": "resume"}))
                streamed = 0
                while streamed < 8:
                    what, m = reader.next()
                    if what == "frame":
                        streamed += 1
                        ws.send(json.dumps({"type": "ack"}))
                results[ep] = got
        except Exception as e:  # reported below, in the test's own thread
            errors.append(repr(e))

    app = create_app(ServeConfig(encoding="raw"), world)
    with live_server(app) as base:
        url = base.replace("http", "ws") + "/ws"
        threads = [threading.Thread(target=player, args=(url, ep)) for ep in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    assert not errors, errors
    for ep, actions in plans.items():
        want = reference(world, ep % 2, actions)
        assert all(np.array_equal(a, b) for a, b in zip(results[ep], want)), ep


@pytest.mark.parametrize("preset", __import__("test_contracts").PRESETS)
def test_every_family_plays(preset):
    """Every world-model preset's debug model starts from an uploaded picture and steps through the
    server, seen only through the WorldModel contract."""
    from test_contracts import build
    from worldline.core.contracts import WorldModel

    model = build(preset).eval()
    if not isinstance(model, WorldModel):
        pytest.skip("tokenizers are not played")
    with serve(World(model, name=preset, meta={"type": preset}), encoding="raw") as client:
        ws, started, first = session(client, image=_png(64))
        assert started["model"]["controls"]["kind"] == "continuous"
        frames = [ws.step([100.0 * i, 400.0]) for i in range(3)]
        ws.send_json({"type": "checkpoint"})
        ck, _ = ws.expect("checkpointed")
        ws.send_json({"type": "restore", "checkpoint": ck["checkpoint"]})
        _, again = ws.expect("restored", frames=1)
    assert [h["i"] for h, _ in frames] == [1, 2, 3] and again[0][0]["i"] == 3
    assert all(pixels(f).shape == (64, 64, 3) for f in frames)

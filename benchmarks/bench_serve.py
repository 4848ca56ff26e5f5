"""Speed of `worldline play`: frame encodings, bare step() vs end-to-end WebSocket frames/s seen by a
headless client, and key-to-frame latency.

    python benchmarks/bench_serve.py --ckpt demo/runs/world_model/final --data demo/data [--seconds 10]

1. encodings: bytes per frame, encode and decode time, PSNR of JPEG/PNG/WebP/raw on the dataset's frames;
2. bare: step() of the model at batch 1 (+ the frame conversion and encoding the server adds), in
   this process, one thread;
3. end-to-end: `worldline play --fps 0` in a subprocess (the real server: uvicorn, one worker thread
   per session); a client in this process receives and decodes frames for --seconds and counts
   them; then, at target fps 10 (PushT's own), 30 and max, it changes the action ~3 times a second
   and times the first frame whose header carries that action's sequence number (key-to-frame);
4. two sessions at once (each one's frames/s), and one with the real PushT env stepped beside it.

Prints numbers and the ratio end-to-end / bare (the issue's floor: >= 0.8 and >= 15 fps).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ------------------------------------------------------------------------------------------------
# 1-2: in process
# ------------------------------------------------------------------------------------------------


def bench_encodings(frames: np.ndarray, repeats: int) -> None:
    from worldline.serve import codec

    print(f"\nencodings ({len(frames)} frames of {frames.shape[1]}x{frames.shape[2]}, median over frames):")
    print(f"{'format':<14}{'bytes':>8}{'vs raw':>8}{'encode ms':>11}{'decode ms':>11}{'PSNR dB':>9}")
    for enc, q in (("raw", 0), ("png", 0), ("jpeg", 90), ("jpeg", 75), ("webp", 90)):
        sizes, enc_t, dec_t, psnrs = [], [], [], []
        for f in frames[:repeats]:
            t = time.perf_counter()
            data = codec.encode(f, enc, q or 90)
            enc_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            back = codec.decode(data, enc, f.shape[:2])
            dec_t.append(time.perf_counter() - t)
            sizes.append(len(data))
            mse = np.mean((back.astype(np.float64) - f) ** 2)
            psnrs.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
        name = f"{enc} q{q}" if q else enc
        raw = frames[0].nbytes
        print(f"{name:<14}{statistics.median(sizes):>8.0f}{statistics.median(sizes) / raw:>8.2f}"
              f"{statistics.median(enc_t) * 1e3:>11.3f}{statistics.median(dec_t) * 1e3:>11.3f}{statistics.median(psnrs):>9.1f}")


def load_bare(ckpt: Path, data: Path):
    """The demo model stepping from episode 0: returns (rate(steps, encode) -> (frames/s, CPU ms per
    step), the frames it predicts (N, H, W, 3))."""
    from worldline.serve import World, codec

    world = World.load(ckpt, data, real_env=False)
    ep = world.episode(0)
    K = world.context_frames
    ctx = codec.to_tensor(ep["frames"][:K])[None]
    ctx_actions = torch.from_numpy(ep["actions"][: K - 1])[None] if K > 1 else None
    actions = torch.from_numpy(ep["actions"]).float()
    with torch.no_grad():
        state = world.model.init_state(ctx, ctx_actions)
        predicted = []
        for i in range(min(100, len(actions) - K)):
            state, frame = world.model.step(state, actions[K - 1 + i][None])
            predicted.append(codec.to_uint8(frame))

    def rate(steps: int, encode: bool = False) -> tuple[float, float]:
        nonlocal state
        with torch.no_grad():
            t, cpu = time.perf_counter(), time.thread_time()
            for i in range(steps):
                state, frame = world.model.step(state, actions[i % len(actions)][None])
                if encode:
                    codec.encode(codec.to_uint8(frame), "jpeg", 90)
            return steps / (time.perf_counter() - t), (time.thread_time() - cpu) / steps * 1e3

    return rate, np.stack(predicted)


# ------------------------------------------------------------------------------------------------
# 3-4: a real server in a subprocess, a headless client here
# ------------------------------------------------------------------------------------------------


class Client:
    """A headless player: a websockets (sync) connection that decodes every frame it receives."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None, compression=None).__enter__()  # left by close()
        self.seq = 0

    def send(self, **msg):
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 30.0):
        from worldline.serve import codec

        m = self.ws.recv(timeout=timeout)
        if isinstance(m, str):
            reply = json.loads(m)
            if reply["type"] == "error":
                raise RuntimeError(reply["message"])
            return "json", reply
        header, pictures = codec.unpack(m)
        codec.decode(pictures[0], header["fmt"], (header["h"], header["w"]))  # a real client shows it
        self.send(type="ack")
        return "frame", header

    def start(self, **kw):
        self.send(type="start", paused=True, window=2, **kw)
        while True:
            kind, m = self.recv()
            if kind == "json" and m["type"] == "started":
                return m

    def throughput(self, seconds: float, server_pid: int | None = None) -> tuple[float, int, float, float]:
        """Frames/s received while running flat out, frames the server dropped meanwhile, and the
        CPU ms per frame of the server process and of this client."""
        self.send(type="fps", fps=0)
        self.send(type="resume")
        first, n, drop0, drop = None, 0, None, 0
        cpu0 = server_cpu(server_pid)
        me0 = time.process_time()
        while True:
            kind, m = self.recv()
            if kind != "frame":
                continue
            now = time.perf_counter()
            if first is None:
                first, drop0 = now, m["drop"]
                continue
            n += 1
            drop = m["drop"] - drop0
            if now - first >= seconds:
                break
        server_ms = (server_cpu(server_pid) - cpu0) / n * 1e3
        client_ms = (time.process_time() - me0) / n * 1e3
        self.send(type="pause")
        self.drain()
        return n / (now - first), drop, server_ms, client_ms

    def latency(self, fps: float, samples: int, spec_low: float, spec_high: float) -> list[float]:
        """Key-to-frame: time from sending an action to the first frame made with it."""
        self.send(type="fps", fps=fps)
        self.send(type="resume")
        rng = np.random.default_rng(0)
        out = []
        next_at = time.perf_counter() + 0.3
        pending: tuple[int, float] | None = None
        while len(out) < samples:
            now = time.perf_counter()
            if pending is None and now >= next_at:
                self.seq += 1
                action = rng.uniform(spec_low, spec_high, 2).round(1).tolist()
                pending = (self.seq, time.perf_counter())
                self.send(type="action", seq=self.seq, action=action)
            kind, m = self.recv()
            if kind == "frame" and pending is not None and m["seq"] >= pending[0]:
                out.append((time.perf_counter() - pending[1]) * 1e3)
                pending = None
                next_at = time.perf_counter() + rng.uniform(0.2, 0.45)
        self.send(type="pause")
        self.drain()
        return out

    def drain(self):
        while True:
            try:
                kind, m = self.recv(timeout=0.5)
            except TimeoutError:
                return
            if kind == "json" and m["type"] == "paused":
                time.sleep(0.2)

    def close(self):
        self.ws.close()


def server_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far (0 without a pid)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(ckpt: Path, data: Path, port: int, real_env: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "worldline", "play", "--ckpt", str(ckpt), "--data", str(data), "--port", str(port),
           "--fps", "0", "--max-sessions", "4", "--allowed-dir", str(Path(ckpt).resolve().parents[2]),
           "--real-env" if real_env else "--no-real-env"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="world model checkpoint (e.g. demo/runs/world_model/final)")
    parser.add_argument("--data", type=Path, required=True, help="its dataset (e.g. demo/data)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of streaming per throughput figure")
    parser.add_argument("--steps", type=int, default=300, help="steps timed for the bare rate")
    parser.add_argument("--samples", type=int, default=40, help="key-to-frame samples per target fps")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / end-to-end measurements")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from worldline.data.format import Dataset

    print(f"bench_serve: {args.ckpt} on {args.data}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    frames = Dataset(args.data).episode(0)["frames"]
    rate, predicted = load_bare(args.ckpt, args.data)
    print("\nrecorded frames:", end="")
    bench_encodings(frames, repeats=min(200, len(frames)))
    print("\nframes the model predicts (what play sends):", end="")
    bench_encodings(predicted, repeats=len(predicted))
    rate(20)  # warm-up

    port = free_port()
    proc = serve(args.ckpt, args.data, port, real_env=False)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        c = Client(url)
        c.start(episode=0)
        c.throughput(1.0)  # warm-up
        print(f"\nbare step() (batch 1, this process) vs end-to-end (`worldline play` subprocess, WebSocket, JPEG, "
              f"client decodes and acks), alternating, {args.rounds} rounds:")
        bares, e2es = [], []
        for r in range(args.rounds):
            bare, bare_cpu = rate(args.steps)
            bare_enc, _ = rate(args.steps // 2, encode=True)
            fps, dropped, server_ms, client_ms = c.throughput(args.seconds, proc.pid)
            bares.append(bare)
            e2es.append(fps)
            print(f"  round {r + 1}: bare {bare:.1f} frames/s ({bare_cpu:.1f} ms CPU/step), step+JPEG {bare_enc:.1f}; "
                  f"end-to-end {fps:.1f} frames/s ({dropped} dropped) = {fps / bare:.2f} x bare; CPU/frame: server "
                  f"{server_ms:.1f} ms (+{server_ms - bare_cpu:.1f} over the step), client {client_ms:.2f} ms; "
                  f"load {os.getloadavg()[0]:.1f}")
        print(f"  median ratio {statistics.median(e / b for e, b in zip(e2es, bares)):.2f}; best end-to-end {max(e2es):.1f} "
              f"vs best bare {max(bares):.1f} frames/s = {max(e2es) / max(bares):.2f}")
        for target in (10, 30, 0):
            lat = c.latency(target, args.samples, 0.0, 512.0)
            print(f"key-to-frame at target {'max' if target == 0 else target} fps: median {statistics.median(lat):.1f} ms, "
                  f"p95 {quantile(lat, 0.95):.1f} ms ({len(lat)} samples)")
        c2 = Client(url)
        c2.start(episode=1)
        results = {}

        def run(name, client):
            results[name] = client.throughput(args.seconds)

        threads = [threading.Thread(target=run, args=(n, cl)) for n, cl in (("a", c), ("b", c2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"two sessions at once: {results['a'][0]:.1f} + {results['b'][0]:.1f} frames/s")
        c.close()
        c2.close()
    finally:
        proc.terminate()
        proc.wait(10)

    port = free_port()
    proc = serve(args.ckpt, args.data, port, real_env=True)
    try:
        c = Client(f"ws://127.0.0.1:{port}/ws")
        started = c.start(episode=0)
        c.throughput(1.0)
        fps, *_ = c.throughput(args.seconds)
        print(f"end-to-end with the real env beside the dream (synced: {started['synced']}): {fps:.1f} frames/s")
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()

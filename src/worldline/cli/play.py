"""``worldline play``: drive a trained world model from a web page, in real time."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from worldline.cli.sampling import GUIDANCE_HELP, SAMPLER_HELP, STEPS_HELP, set_sampling


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_dir(ckpt: Path) -> Path:
    """The folder of a checkpoint's run (runs/wm for runs/wm/final), so its siblings can be chosen."""
    return ckpt.parent if ckpt.name == "final" else ckpt


def play(
    ckpt: Path = typer.Option(..., "--ckpt", help="A trained world model directory (a run's final/)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset whose episodes the page starts from (and whose real world runs beside the dream)."),
    episode: int = typer.Option(0, help="Episode a page starts from."),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but 127.0.0.1/localhost exposes the server to the network."),
    port: int = typer.Option(8000, help="Port to bind."),
    allowed_dir: list[Path] = typer.Option([], "--allowed-dir", help="Directory a client may load checkpoints/datasets from (repeatable; default: the current directory, the checkpoint's run and the dataset). --ckpt and --data must lie inside it when given."),
    record_dir: Optional[Path] = typer.Option(None, "--record-dir", help="Dataset the record button appends episodes to (default: off)."),
    fps: Optional[float] = typer.Option(None, help="Target frames/s (default: the world's own fps; 0: as fast as the model allows)."),
    encoding: str = typer.Option("jpeg", help="Frame encoding on the wire: jpeg, png, webp or raw."),
    max_sessions: int = typer.Option(4, help="Sessions played at once."),
    real_env: bool = typer.Option(True, help="Run the real world beside the dream where the dataset names a built-in one."),
    temperature: Optional[float] = typer.Option(None, help="Token models: sample at this temperature (greedy by default; a game's ball may need sampling to move)."),
    top_k: int = typer.Option(0, help="Token models: sample among the k most likely ids (0 = all)."),
    sample_steps: Optional[int] = typer.Option(None, help=STEPS_HELP),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    guidance: Optional[float] = typer.Option(None, help=GUIDANCE_HELP),
):
    """Play a world model in the browser: keys, mouse or gamepad drive it; it answers frame by frame."""
    from rich.console import Console

    from worldline.core.errors import WorldlineError

    try:
        import uvicorn

        from worldline.serve.app import create_app
        from worldline.serve.config import ServeConfig, allowed_path
        from worldline.serve.world import World
    except ImportError as e:
        raise WorldlineError(f"play needs the serve extra: pip install 'worldline[serve]' ({e.name} is missing)") from None

    console = Console(stderr=True)
    if not 0 < port < 65536:
        raise WorldlineError(f"--port must be in 1..65535, got {port}")
    if allowed_dir:
        dirs = [d.expanduser().resolve() for d in allowed_dir]
        for d in dirs:
            if not d.is_dir():
                raise WorldlineError(f"--allowed-dir {d}: not a directory")
        ckpt = allowed_path(ckpt, dirs, "--ckpt")
        if data is not None:
            data = allowed_path(data, dirs, "--data")
    else:
        dirs = [Path.cwd(), _run_dir(ckpt.expanduser().resolve())] + ([data.expanduser().resolve()] if data is not None else [])
    try:
        config = ServeConfig(allowed_dirs=dirs, record_dir=record_dir, max_sessions=max_sessions, fps=fps, encoding=encoding,
                             episode=episode, real_env=real_env)
    except ValueError as e:
        raise WorldlineError(str(e)) from None
    if not ckpt.is_dir():
        raise WorldlineError(f"--ckpt {ckpt}: no such checkpoint directory")
    world = World.load(ckpt, data, real_env=real_env)
    set_sampling(world.model, temperature, top_k, 1.0, sample_steps, sampler, guidance)
    if world.dataset is not None and episode >= world.dataset.num_episodes:
        raise WorldlineError(f"--episode {episode} is outside the dataset (0..{world.dataset.num_episodes - 1})")
    if not _is_loopback(host):
        console.print(f"[bold yellow]warning:[/bold yellow] binding {host}: anyone who can reach this machine on port {port} "
                      "can play (and load checkpoints from the allowed directories). Use 127.0.0.1 unless you mean it.")
    app = create_app(config, world)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"playing [bold]{world.name}[/bold] ({world.info()['family']}) at [bold]http://{shown}:{port}/[/bold]  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=2 * config.max_upload_bytes)


def register(app: typer.Typer) -> None:
    app.command("play")(play)

"""Play any world model in the browser: ``worldline play --ckpt DIR`` (see app.py and session.py)."""

from worldline.serve.config import ServeConfig
from worldline.serve.world import World

__all__ = ["ServeConfig", "World", "create_app"]


def create_app(*args, **kwargs):
    """See :func:`worldline.serve.app.create_app` (imported on use: FastAPI is an optional extra)."""
    from worldline.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)

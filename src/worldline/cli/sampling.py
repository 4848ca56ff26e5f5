"""Sampling settings from the command line (eval, rollout, play): token sampling for token models,
steps / sampler / guidance scale for diffusion, MaskGIT steps for genie."""

from __future__ import annotations

from worldline.core.errors import WorldlineError


def set_sampling(model, temperature: float | None, top_k: int, top_p: float, steps: int | None = None,
                 sampler: str | None = None, guidance: float | None = None) -> None:
    """Give a model the sampling settings from the command line: token sampling for token models
    (greedy unless asked), steps / sampler / guidance scale for diffusion, MaskGIT steps for genie.
    A setting the model has no use for is an error, not silently ignored."""
    name = getattr(model, "type_name", type(model).__name__)
    if temperature is not None or top_k != 0 or top_p != 1.0:
        if not hasattr(model, "sampling"):
            raise WorldlineError(f"--temperature/--top-k/--top-p apply to token models (autoregressive); this checkpoint is a {name} model")
        from worldline.models.autoregressive.decoding import Sampling

        try:
            model.sampling = Sampling(temperature=1.0 if temperature is None else temperature, top_k=top_k, top_p=top_p)
        except ValueError as e:
            raise WorldlineError(str(e)) from None
    if steps is not None and steps < 1:
        raise WorldlineError(f"--sample-steps must be >= 1, got {steps}")
    if hasattr(model, "maskgit_steps") and sampler is None and guidance is None:
        if steps is not None:
            model.maskgit_steps = int(steps)
        return
    if steps is None and sampler is None and guidance is None:
        return
    if not callable(getattr(model, "set_sampling", None)):
        raise WorldlineError(f"--sample-steps/--sampler/--guidance apply to diffusion models (--sample-steps also to genie); "
                             f"this checkpoint is a {name} model")
    model.set_sampling(steps=steps, sampler=sampler, guidance=guidance)


STEPS_HELP = "Diffusion: sampler steps (1-3 fast, more for quality); genie: MaskGIT steps per frame (default: the checkpoint's)."
SAMPLER_HELP = "Diffusion: euler or heun (default: the checkpoint's)."
GUIDANCE_HELP = "Diffusion: classifier-free guidance scale, >= 0 (1 = off; above 1 follows actions and text harder)."

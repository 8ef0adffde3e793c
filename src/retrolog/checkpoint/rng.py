"""Global random-number-generator states: python ``random``, numpy, torch CPU and CUDA.

Restoring them with the registered objects is what makes training continued after a restore
draw the same dropout masks, shuffles and augmentations as the recorded run.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np

from retrolog._warn import RetrologWarning
from retrolog.checkpoint.codec import Encoder, torch_module


def capture_rng(encoder: Encoder) -> dict[str, Any]:
    """Encode the global RNG states (torch only if the program imported it; CUDA only if the
    program initialised CUDA, since querying it would otherwise create a CUDA context)."""
    state: dict[str, Any] = {
        "python": encoder.encode(random.getstate(), "rng.python"),
        "numpy": encoder.encode(np.random.get_state(), "rng.numpy"),
    }
    torch = torch_module()
    if torch is not None:
        state["torch"] = encoder.encode(torch.get_rng_state(), "rng.torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            state["torch_cuda"] = encoder.encode(list(cuda.get_rng_state_all()), "rng.torch_cuda")
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNG states from a decoded :func:`capture_rng` result."""
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state or "torch_cuda" in state:
        import torch

        if "torch" in state:
            torch.set_rng_state(state["torch"])
        cuda_states = state.get("torch_cuda")
        if cuda_states:
            if torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda_states):
                torch.cuda.set_rng_state_all(cuda_states)
            else:
                warnings.warn(
                    "retrolog: the checkpoint holds CUDA RNG states for "
                    f"{len(cuda_states)} device(s) but this process cannot set them; "
                    "GPU random draws will differ from the recorded run",
                    RetrologWarning,
                    stacklevel=3,
                )

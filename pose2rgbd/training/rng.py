"""The random-number state of a training run, saved with each checkpoint and restored on resume.

A resumed run must draw the same random numbers as the uninterrupted one (consistency-loss pose perturbations,
the hybrid's exclusion windows, dropout, anything a model draws in ``train_step``): re-seeding at the resume point
would replay the stream from its start instead. Saved: Python's ``random``, NumPy's legacy global generator,
torch's CPU generator and every initialized CUDA device's. The data order does not depend on these: each epoch's
order and each DataLoader's worker seeds come from generators seeded by ``train.seed`` and the epoch
(:meth:`pose2rgbd.training.trainer.Trainer._loader`). Everything is stored as plain values and tensors, what a
checkpoint may hold (:mod:`pose2rgbd.models.checkpoint` loads with ``weights_only``).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """The global random-number state now (see the module docstring)."""
    version, internal, gauss = random.getstate()
    npst = np.random.get_state(legacy=False)  # noqa: NPY002 - the legacy global RNG third-party code draws from
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np.asarray(npst["state"]["key"], dtype=np.int64)),
            "pos": int(npst["state"]["pos"]),
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> bool:
    """Restore a state from :func:`rng_state`; False (with a warning) when it is missing or unreadable, e.g. a
    checkpoint written before the state was saved: the run then continues from the re-seeded generators."""
    if not state:
        log.warning(
            "the checkpoint holds no random-number state (written by an older pose2rgbd): the resumed run draws "
            "other random numbers than an uninterrupted one would"
        )
        return False
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
        n = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            {
                "bit_generator": "MT19937",
                "state": {"key": np.asarray(n["key"], dtype=np.int64).astype(np.uint32), "pos": int(n["pos"])},
                "has_gauss": int(n["has_gauss"]),
                "gauss": float(n["gauss"]),
            }
        )
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            else:
                log.warning(
                    "the checkpoint's CUDA random-number state is of %d device(s), this machine has %d: not restored",
                    len(cuda), torch.cuda.device_count(),
                )  # fmt: skip
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        log.warning("the checkpoint's random-number state cannot be restored (%s): continuing without it", e)
        return False
    return True

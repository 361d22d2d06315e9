"""Network outputs (torch, [-1, 1]) -> numpy images in data units."""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd.models.normalization import DepthNormalizer


def outputs_to_numpy(outputs: dict[str, Any], depth_normalizer: DepthNormalizer | None) -> dict[str, np.ndarray | None]:
    """``{"rgb": uint8 (B, S, S, 3) | None, "depth": float32 (B, S, S) metres | None,
    "confidence": float32 (B, S, S) | None}``. Depth needs ``depth_normalizer`` (else it is None)."""

    def arr(t: Any) -> np.ndarray:
        return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float32)

    out: dict[str, np.ndarray | None] = {"rgb": None, "depth": None, "confidence": None}
    if outputs.get("rgb") is not None:
        x = arr(outputs["rgb"]).transpose(0, 2, 3, 1)
        out["rgb"] = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if outputs.get("depth") is not None and depth_normalizer is not None:
        out["depth"] = depth_normalizer.denormalize(arr(outputs["depth"])[:, 0]).astype(np.float32)
    if outputs.get("confidence") is not None:
        out["confidence"] = arr(outputs["confidence"])[:, 0].astype(np.float32)
    return out

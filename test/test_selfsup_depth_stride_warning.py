"""The automatic stride of self-supervised depth says when even the largest stride leaves too little parallax."""

from __future__ import annotations

import logging

import pytest


@pytest.mark.parametrize(("motion", "warned"), [(0.04, True), (0.5, False)])
def test_a_stride_far_below_the_target_motion_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, motion: float, warned: bool
) -> None:
    """A drone clip whose sky and sea fill the frame measured 0.04 px per frame: stride 10 gave 0.4 px against the
    3 px target, said only at INFO level; the network then learned a flat, far depth."""
    import pose2rgbd.methods.selfsup_depth.recipe as recipe
    from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig

    monkeypatch.setattr(recipe, "auto_stride", lambda frames, target, cap: (min(cap, 10), motion))
    with caplog.at_level(logging.INFO, logger=recipe.log.name):
        assert recipe.resolve_stride(object(), SelfSupDepthConfig()) == 10  # type: ignore[arg-type]
    (rec,) = [r for r in caplog.records if "model.stride 0 (automatic)" in r.getMessage()]
    assert (rec.levelno == logging.WARNING) == warned
    assert ("far below the 3 px" in rec.getMessage()) == warned and "stride 10" in rec.getMessage()

"""The words on a conversion's report figures (report/sync.png, report/track.png)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from pose2rgbd.convert.report import aligned_title, write_report


def test_the_aligned_panel_says_the_signed_shift_of_the_gps_stamps() -> None:
    assert aligned_title(0.0) == "after alignment (GPS stamps shifted by +0.000 s)"
    assert aligned_title(2.5) == "after alignment (GPS stamps shifted by -2.500 s)"  # drawn at t - offset
    assert aligned_title(-0.17) == "after alignment (GPS stamps shifted by +0.170 s)"
    assert aligned_title(0.0002) == "after alignment (GPS stamps shifted by +0.000 s)"  # no "-0.000"


def test_the_report_figures_read_naturally_for_any_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walking clip's report: no "- +0.000" (a minus before a signed number), no "Flight path"."""
    texts: list[str] = []

    def savefig(fig: Figure, path: object, **kw: object) -> None:  # the figures' words, no file
        texts.extend(a.get_title(loc=loc) for a in fig.axes for loc in ("left", "center"))
        if fig._suptitle is not None:
            texts.append(fig._suptitle.get_text())

    monkeypatch.setattr(Figure, "savefig", savefig)
    n, t = 40, np.arange(40) / 10.0
    enu = np.stack([1.5 * t, 0.2 * t, np.zeros(n)], -1)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, 3] = enu
    streams = SimpleNamespace(input_path="walk.mp4", flow=np.sin(t) + 2.0, frame_t=t)
    plan = SimpleNamespace(summary={"time_offset": {"offset_s": 0.0}}, gps_t_corr=t, gps_speed=np.cos(t) + 2.0,
                           sync=None, flow_masked=np.zeros(n, bool), T_world_cam=T, keep=np.ones(n, bool), enu=enu,
                           dropped_fixes_enu=np.zeros((0, 3)))  # fmt: skip
    write_report(tmp_path, streams, plan)  # type: ignore[arg-type]
    said = " | ".join(texts)
    assert "after alignment (GPS stamps shifted by +0.000 s)" in said, said
    assert "Camera path: walk.mp4 (ENU about the datum)" in said, said
    assert "- +" not in said and "- -" not in said and "flight" not in said.lower(), said

"""The stages of the conversion pipeline: Algorithm 1 (the time offset and the frame poses, `time_offset`) and
Algorithm 2 (a trained depth model's export, scaled to metres, `depth_export`). They never import a source
(:mod:`pose2rgbd.convert.sources` imports them); the whole of ``convert video --depth selfsup`` is
:mod:`pose2rgbd.convert.video_depth`."""

"""The stages of the conversion pipeline: Algorithm 1 (the time offset and the frame poses, `time_offset`) and
Algorithm 2 (`depth_chain`: frames -> metric poses -> depth training -> depth export, each a `work.Stage`, cached
in a work folder by `work.run_stage`; the export `depth_export`, scaled to metres by `scale`). They never import a
source (:mod:`pose2rgbd.convert.sources` imports them; a stage that converts is given its source); the whole of
``convert video --depth selfsup`` is :mod:`pose2rgbd.convert.video_depth`, which chains them."""

"""One :class:`~pose2rgbd.convert.pipeline.Source` per kind of recording: a rosbag (:mod:`.bag`), a video + GPS log
or a GoPro MP4 (:mod:`.video`), posed images (:mod:`.images`); time-synchronized sources share :mod:`.synced`.
They are listed in ``SOURCES`` (:mod:`pose2rgbd.convert`) and imported only when chosen, so nothing is imported
here."""

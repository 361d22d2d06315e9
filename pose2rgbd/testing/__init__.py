"""Stand-ins and fixtures for the tests and benchmarks, never used by the product and left out of the wheel.

* :mod:`.ground_plane`: the ``ground-plane`` stand-in renderer (analytic depth and colour of a flat ground), its
  checkpoints and the look-down poses of serving tests;
* :mod:`.toy_localizer`: the ``toy-localizer`` stand-in (a seeded random image -> pose network);
* :mod:`.hybrid_keyframes`: hybrid checkpoints over analytic ground-plane keyframes and their query poses;
* :mod:`.flight_bag`: synthetic flight bags (camera, TF, GPS, odometry) for the offline runtime and the live nodes.

The model registry resolves the two stand-ins by name (``_STAND_INS`` in :mod:`pose2rgbd.models.registry`) so
that their saved checkpoints load in any process of a checkout (a node, a benchmark).
"""

"""Model kinds, one folder each: config and presets, network, training recipe, exported as a ``FAMILY``
(:class:`pose2rgbd.models.registry.ModelFamily`) and listed in the registry's table of built-in kinds."""

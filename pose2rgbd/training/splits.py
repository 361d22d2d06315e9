"""Train / validation / test splits: they live in :mod:`pose2rgbd.dataset.splits` (the place map selects its
keyframes with them too); this name stays for the code and notebooks that import it from here."""

from pose2rgbd.dataset.splits import SPLIT_KINDS, Split, make_split, split_from_config

__all__ = ["SPLIT_KINDS", "Split", "make_split", "split_from_config"]

"""Command-line interface: ``pose2rgbd <command>``. Each command lives in its own module here."""

import sys

from pose2rgbd.cli.main import main

sys.exit(main())

"""`python -m clipgauge` runs the command line."""

import sys

from clipgauge.cli import main

sys.exit(main())

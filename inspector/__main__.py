"""`python -m inspector ...`: the `inspector` command line (how the demo and soak start the actuator simulator)."""

import sys

from inspector.cli import main

sys.exit(main())

"""`python -m mobilesam.cli ...`, as `mobilesam ...`."""

import sys

from . import main

sys.exit(main())

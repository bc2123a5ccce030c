"""`python -m mobilesam ...` (also what `torchrun -m mobilesam distill train ...` runs)."""

import sys

from .cli import main

sys.exit(main())

"""``python -m mwt``, as ``torchrun -m mwt train ...`` starts it."""

import sys

from mwt.cli import main

sys.exit(main())

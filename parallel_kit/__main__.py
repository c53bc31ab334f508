"""``python -m parallel_kit`` is ``parallel-kit``."""

import sys

from .cli import main

sys.exit(main())

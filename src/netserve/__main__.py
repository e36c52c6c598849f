"""``python -m netserve``: the same as the ``netserve`` command."""

import sys

from .cli import main

sys.exit(main())

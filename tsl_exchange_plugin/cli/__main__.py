"""``python -m tsl_exchange_plugin.cli``: the same as ``tsl-exchange``."""

import sys

from .commands import main

sys.exit(main())

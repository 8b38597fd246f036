"""``tsl-exchange`` and its commands. The console script names ``tsl_exchange_plugin.cli:main``."""

from .commands import main

__all__ = ["main"]

"""Exchange Sync for timeSensor LEGAL."""

PLUGIN_ID = "exchange_sync"
__version__ = "0.1.0"

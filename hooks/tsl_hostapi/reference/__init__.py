"""A reference host on SQLite for tests and the demo: records, users, sample firm, Interfaces page, UI shell."""

from tsl_hostapi.reference.host import RECORD_CLASSES, Notification, ReferenceHost
from tsl_hostapi.reference.interfaces import InterfaceEntry
from tsl_hostapi.reference.shell import OpenedTab

__all__ = ["RECORD_CLASSES", "InterfaceEntry", "Notification", "OpenedTab", "ReferenceHost"]

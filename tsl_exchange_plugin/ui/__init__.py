"""What the host shows: the settings tabs, menu actions and buttons, the status view and the
"Testen" connection test. Calls into ``core``; nothing below imports this package."""

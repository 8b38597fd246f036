"""The EWS backend: the only package of the plugin that imports exchangelib."""

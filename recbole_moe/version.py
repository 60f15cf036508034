"""The version of recbole-moe (read by setup.cfg and by run records of an uninstalled copy)."""

__version__ = "0.1.0"

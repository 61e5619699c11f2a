"""The nmc version (one place; the package, core-map headers and reports read it)."""
__version__ = "0.1.0"

"""nmc: a neuromorphic hardware compiler and cycle-level emulator for Tianjic-like many-core chips."""
__version__ = "0.1.0"

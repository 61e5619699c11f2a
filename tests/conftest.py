"""Tests are grouped by the package they test (tests/nmc, tests/frontend, tests/mapper, tests/emulator)
plus tests/integration for whole pipelines.  Shared model and core-map builders live beside this file
(``nets.py``, ``randmaps.py``); pytest puts this folder on ``sys.path`` because it holds this conftest."""

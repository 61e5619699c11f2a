"""Tests are grouped by the package they test (tests/core: nmc's data types, files, rules, API and CLI;
tests/frontend, tests/mapper, tests/emulator)
plus tests/integration for whole pipelines.  Shared model and core-map builders live beside this file
(``nets.py``, ``randmaps.py``); pytest puts this folder on ``sys.path`` because it holds this conftest.
No folder here may be named like a package (a ``tests/nmc`` folder would shadow ``nmc`` itself for every
script that puts this folder on ``sys.path``: tests/core/test_architecture.py checks it)."""

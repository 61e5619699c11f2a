"""The floor plan (docs/architecture.md), checked on the source: who may import whom, no import cycles,
no nmc imports hidden inside functions, and an install that adds only ``nmc`` to site-packages."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: repository folder -> the package it installs as (pyproject.toml package-dir)
PACKAGES = {"nmc": "nmc", "frontend": "nmc.frontend", "mapper": "nmc.mapper", "emulator": "nmc.emulator"}

#: the ground floor: data types that import nothing above them
GROUND = {"nmc.ir", "nmc.chip", "nmc.coremap", "nmc.corefile", "nmc.errors", "nmc.version", "nmc.files",
          "nmc.rules", "nmc.resources", "nmc.neurons", "nmc.presets", "nmc.opschema", "nmc.encoders"}
#: the top floor: may import anything
TOP = {"nmc", "nmc.api", "nmc.cli", "nmc.calibration"}
#: a stage may import the ground floor, itself and the stages listed here
STAGE_DEPS = {"nmc.frontend": set(), "nmc.mapper": {"nmc.frontend"}, "nmc.emulator": set()}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


MODULES = _modules()


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_pkg = MODULES[mod].name == "__init__.py"
    base = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> list[tuple[str, int, bool]]:
    """(imported nmc module, line, at module level) for every import of ``mod``."""
    tree = ast.parse(MODULES[mod].read_text(), filename=str(MODULES[mod]))
    top_level = {id(n) for n in tree.body}
    for n in tree.body:  # imports under a module-level `if`/`try` count as module level
        if isinstance(n, (ast.If, ast.Try)):
            top_level |= {id(x) for x in ast.walk(n)}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = _resolve(mod, n)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in n.names]
        else:
            continue
        for name in names:
            if name == "nmc" or name.startswith("nmc."):
                while name not in MODULES:  # `import nmc.x.y` of a symbol: the module that holds it
                    name = name.rsplit(".", 1)[0]
                out.append((name, n.lineno, id(n) in top_level))
    return out


def _floor(mod: str) -> str:
    if mod in TOP:
        return "top"
    for g in GROUND:
        if mod == g or mod.startswith(g + "."):
            return "ground"
    for s in STAGE_DEPS:
        if mod == s or mod.startswith(s + "."):
            return s
    raise AssertionError(f"module {mod} is on no floor of the architecture; add it to this test and the doc")


def test_every_module_has_a_floor():
    for mod in MODULES:
        _floor(mod)


def test_the_floors_here_are_the_documented_ones():
    """GROUND, TOP and STAGE_DEPS above are docs/architecture.md's "Floors" section, not a copy that drifted."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    floors = doc[doc.index("## Floors"):doc.index("There are no import cycles")]
    items = {m.group(1): m.group(2) for m in re.finditer(r"- \*\*([\w ]+)\*\*(.*?)(?=\n- \*\*|\Z)", floors, re.S)}
    assert set(items) == {"Ground floor", "Stages", "Top"}, items
    ground = {"nmc." + n.rstrip("/") for n in re.findall(r"`([\w/]+)`", items["Ground floor"]) if n != "nmc/"}
    assert ground == GROUND
    assert set(re.findall(r"`(nmc(?:\.\w+)?)`", items["Top"])) == TOP
    deps = {}
    for clause in items["Stages"].split(";"):
        named = re.findall(r"`(nmc\.\w+)`", clause)
        deps[named[0]] = set(named[1:])
    assert deps == STAGE_DEPS


def test_no_nmc_import_inside_a_function():
    hidden = [f"{mod}:{line} imports {name}" for mod in MODULES for name, line, top in _imports(mod) if not top]
    assert hidden == []


def test_floors_import_only_downwards():
    bad = []
    for mod in MODULES:
        floor = _floor(mod)
        for name, line, _ in _imports(mod):
            target = _floor(name)
            if floor == "top" or target == "ground" or target == floor:
                continue
            if floor != "ground" and target in STAGE_DEPS.get(floor, set()):
                continue
            bad.append(f"{mod}:{line} ({floor}) imports {name} ({target})")
    assert bad == []


def test_no_import_cycles():
    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    for mod in MODULES:
        for name, _, _ in _imports(mod):
            if name != mod:
                g.add_edge(mod, name)
    cycles = list(nx.simple_cycles(g))
    assert cycles == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    # the checks above must be able to fail: feed them a fake package with both faults
    (tmp_path / "nmc").mkdir()
    (tmp_path / "nmc" / "__init__.py").write_text("")
    (tmp_path / "nmc" / "ir.py").write_text("from nmc.api import x\n")
    (tmp_path / "nmc" / "api.py").write_text("def f():\n    from nmc import ir\n")
    fake = {"nmc": tmp_path / "nmc" / "__init__.py", "nmc.ir": tmp_path / "nmc" / "ir.py",
            "nmc.api": tmp_path / "nmc" / "api.py"}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", fake)
    with pytest.raises(AssertionError):
        test_floors_import_only_downwards()
    with pytest.raises(AssertionError):
        test_no_nmc_import_inside_a_function()
    with pytest.raises(AssertionError):
        test_no_import_cycles()


def test_install_adds_only_nmc(tmp_path):
    """``pip install .`` puts one top-level package, ``nmc`` (stages and every subpackage inside it), plus its
    metadata; the installed copy, away from the source tree, compiles and emulates a model."""
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip("the build backend could not be fetched here")
    assert r.returncode == 0, r.stderr
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert [t for t in top if not t.endswith(".dist-info")] == ["nmc"]
    for mod in MODULES:  # every module of the source tree is installed where its package name says
        rel = mod.split(".")[1:]
        assert (target / "nmc" / Path(*rel)).with_suffix(".py").is_file() or \
            (target / "nmc" / Path(*rel) / "__init__.py").is_file(), mod
    assert (target / "nmc" / "presets" / "tianjic.toml").is_file()
    code = ("import numpy as np, nmc; from nmc.frontend import ModelBuilder\n"
            "b = ModelBuilder('t', num_steps=2); x = b.input('x', (2,), kind='step')\n"
            "s, _, _ = b.neuron('CubaLIF', b.gemm(x, [[1.0, 1.0]]), 'n', threshold=1.0); b.output(s)\n"
            "cm = nmc.compile(b.build(), calib={'x': np.ones((2, 1, 2))})\n"
            "print(nmc.__file__, nmc.emulate(cm, {'x': np.ones((2, 1, 2))}).outputs['n.s'].ravel().tolist())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(target)})
    assert r.returncode == 0, r.stderr
    where, spikes = r.stdout.split(" ", 1)
    # CubaLIF (alpha 0, beta 1, threshold 1, subtract): acc = 1 + 1 = 2 each step; u = 2, then 1 + 2 = 3: fires twice
    assert where.startswith(str(target)) and spikes.strip() == "[1.0, 1.0]"


def test_the_tests_folder_does_not_shadow_nmc(tmp_path):
    """Benchmarks and the fuzz harness put tests/ on sys.path; nmc must still be the package, not a folder of
    tests (a tests/nmc folder did shadow it: ``nmc.compile`` was missing)."""
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import nmc; print(nmc.__file__, nmc.compile)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].endswith(str(Path("nmc", "__init__.py")))

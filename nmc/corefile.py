"""Core-map files: save and load (format version, integrity hash, structure and the chip's design rules).

:func:`validate` is what every consumer of a core map that did not come straight from the mapper
runs: the structural checks of :func:`nmc.coremap.check_coremap` plus every design rule of
:mod:`nmc.rules`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .chip import chip_from_dict
from .coremap import FORMAT, FORMAT_VERSION, TABLES, CoreMap, check_coremap, check_header
from .errors import CoreMapError, NmcError
from .files import ARCHIVE_ERRORS, MAX_ARRAY_BYTES, atomic_write_bytes, read_npy_member, size_text
from .rules import check_coremap as design_rules
from .version import __version__

__all__ = ["save", "load", "validate"]


def validate(cm: CoreMap) -> None:
    """Structural checks plus the chip's limits; raise :class:`CoreMapError` naming what is wrong."""
    try:
        check_coremap(cm)
    except CoreMapError as e:
        raise CoreMapError(f"{e}; the core map is damaged or was not written by 'nmc compile': recompile the "
                           "model") from None
    violations = design_rules(cm)  # the emulator refuses a core map that breaks one of its chip's limits
    if violations:
        raise CoreMapError("core map breaks the chip's limits:\n" + "\n".join("  - " + v for v in violations))


def _digest(meta_wo_hash: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(meta_wo_hash, sort_keys=True).encode())
    for k in sorted(arrays):
        v = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(v.shape).encode())
        h.update(v.tobytes())
    return h.hexdigest()


def _member(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A member with a fixed timestamp, so that equal core maps are equal files."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def save(cm: CoreMap, path: str | os.PathLike) -> Path:
    """Write ``cm`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nmc_version": __version__,
        "chip": cm.chip.to_dict(),
        "meta": cm.meta,
    }
    arrays = cm.arrays()
    header["sha256"] = _digest(header, arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        _member(z, "header.json", json.dumps(header, indent=1, sort_keys=True).encode())
        for k in _array_names():  # a fixed member order
            v = arrays[k]
            b = io.BytesIO()
            np.save(b, np.ascontiguousarray(v), allow_pickle=False)
            _member(z, f"{k}.npy", b.getvalue())
    atomic_write_bytes(path, buf.getvalue(), "core map")
    return path


#: largest header.json read (a real one is a few hundred KiB)
MAX_HEADER_BYTES = 64 << 20


def _array_names() -> list[str]:
    return [f"{t}.{k}" for t, tc in TABLES.items() for k in tc.columns()]


def load(path: str | os.PathLike, check: bool = True, limit: int = MAX_ARRAY_BYTES) -> CoreMap:
    """Read a core map; check format, version, integrity, structure and (``check``) the chip's design rules.

    Nothing is inflated before its size is checked: ``header.json`` against :data:`MAX_HEADER_BYTES`, the
    arrays together and every array's archive entry and ``.npy`` header against ``limit`` bytes (and the
    entry and header against each other).
    """
    path = Path(path)
    if not path.exists():
        raise CoreMapError(f"core map '{path}' does not exist")
    if path.is_dir():
        raise CoreMapError(f"core map '{path}' is a folder; give the .nmc file written by 'nmc compile'")
    try:
        with zipfile.ZipFile(path) as z:
            infos = {}
            for info in z.infolist():
                if info.filename in infos:
                    raise CoreMapError(f"'{path}' is corrupt: member '{info.filename}' appears twice; recompile it")
                infos[info.filename] = info
            if "header.json" not in infos:
                raise CoreMapError(f"'{path}' is not an nmc core map (no header.json); compile one with 'nmc compile'")
            hinfo = infos["header.json"]
            if hinfo.file_size > MAX_HEADER_BYTES:
                raise CoreMapError(f"'{path}': header.json inflates to {hinfo.file_size} bytes, more than the "
                                   f"{MAX_HEADER_BYTES} bytes a core-map header can have; the file is damaged")
            header = json.loads(z.read(hinfo))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                fmt = header.get("format") if isinstance(header, dict) else f"a JSON {type(header).__name__}"
                raise CoreMapError(f"'{path}' is not an nmc core map (header format {fmt!r}); compile one with "
                                   "'nmc compile'")
            ver = header.get("format_version")
            if ver != FORMAT_VERSION:
                raise CoreMapError(f"'{path}' has core-map format version {ver}; this nmc reads version "
                                   f"{FORMAT_VERSION}: recompile the model with this nmc")
            total = sum(i.file_size for n, i in infos.items() if n != "header.json")
            if total > limit:
                raise CoreMapError(f"'{path}': its arrays inflate to {total} bytes ({size_text(total)}) in total, more "
                                   f"than the limit of {size_text(limit)} for a core map; the file is damaged or not "
                                   "what it claims")
            wanted = {f"{k}.npy" for k in _array_names()} | {"header.json"}
            extra = sorted(set(infos) - wanted)
            if extra:
                raise CoreMapError(f"'{path}' is corrupt: it holds unexpected member(s) {extra[:5]}; recompile the model")
            arrays = {}
            for k in _array_names():
                if f"{k}.npy" not in infos:
                    raise CoreMapError(f"'{path}' is corrupt: array '{k}' is missing; recompile the model")
                arrays[k] = read_npy_member(z, infos[f"{k}.npy"], f"'{path}': array '{k}'", CoreMapError, limit)
    except NmcError:
        raise
    except zipfile.BadZipFile:
        raise CoreMapError(f"'{path}' is corrupt or not an nmc core map (not a readable archive); recompile it") from None
    except ARCHIVE_ERRORS as e:
        # a damaged archive fails in many places: bad CRC, bad deflate stream, unknown compression method
        raise CoreMapError(f"'{path}' is corrupt ({type(e).__name__}: {e}); recompile the model") from None
    stored = header.pop("sha256", None)
    try:
        digest = _digest(header, arrays)
    except (TypeError, ValueError):
        digest = None
    if stored != digest:
        raise CoreMapError(f"'{path}' failed its integrity check (SHA-256 mismatch): the file was modified or "
                           "damaged after compilation; recompile the model")
    try:
        chip = chip_from_dict(header.get("chip"), origin=f"{path} chip")
    except NmcError as e:
        raise CoreMapError(f"'{path}': embedded chip description is invalid: {e}") from None
    meta = header.get("meta")
    try:
        check_header(meta)
    except CoreMapError as e:
        raise CoreMapError(f"'{path}': {e}; the header was edited or damaged: recompile the model") from None
    cm = CoreMap.from_arrays(chip, meta, arrays)
    if check:
        validate(cm)
    else:
        check_coremap(cm)  # the structure emulation needs, without the chip's design rules
    return cm

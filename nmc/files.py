"""Files: atomic writes (a reader sees the old file or the whole new one, never a part; no temp file is
left behind, whatever happens; permissions as ``open`` would give, respecting the umask) and bounded
readers of ``.npy`` members of zip archives (sizes from the headers checked before anything is inflated).
"""
from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import NmcError, OutputError

__all__ = ["atomic_write_bytes", "save_npz", "save_json", "check_output_path", "read_npy_member", "read_npz",
           "GIB", "MAX_ARRAY_BYTES", "size_text"]

GIB = 1 << 30
#: largest array any nmc reader inflates (inputs.npz, core-map members); a file claiming more is refused
MAX_ARRAY_BYTES = 2 * GIB

#: what reading a damaged zip/npy can raise
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, ValueError, OSError, KeyError,
                  NotImplementedError, RuntimeError, UnicodeDecodeError, SyntaxError, TypeError, OverflowError)


def size_text(n: float) -> str:
    """Bytes for messages: '812.0 GiB', '3.2 MiB', '392 bytes'."""
    for unit, k in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def check_output_path(path: str | os.PathLike, what: str = "output", error: type[NmcError] = OutputError) -> Path:
    """Refuse an output path that is a folder or whose folder cannot be created or written, naming it."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise error(f"{what} path '{path}' names no file; give a file name, e.g. out.nmc")
    if p.is_dir():
        raise error(f"{what} path '{p}' is a folder; give a file name inside it, e.g. '{p / 'out'}'")
    parent = p.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"cannot write {what} '{p}': '{existing}' is not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"cannot write {what} '{p}': folder '{existing}' is not writable; choose another path")
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "file") -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    The temporary file is removed on any failure (also KeyboardInterrupt); the file gets the permissions
    a plain ``open(path, "wb")`` would give (``0o666`` less the umask).  An unwritable destination is an
    :class:`NmcError` naming the path.
    """
    path = check_output_path(path, what)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(f"cannot write {what} '{path}': {e.strerror or e}; choose another path") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), "result file")


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented JSON (strict: NaN or infinity is a bug, not a value) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode(), "report")


# ----------------------------------------------------------------------------- bounded readers
def _npy_header(f, where: str, error: type[NmcError]) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:  # numpy parses the header text: any failure there means a damaged file
        raise error(f"{where} is not a readable .npy array ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise error(f"{where} holds Python objects (dtype {dtype}); only numeric arrays are read")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise error(f"{where} declares an impossible shape {list(shape)}")
    return tuple(shape), bool(fortran), dtype


def read_npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, error: type[NmcError],
                    limit: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """One ``.npy`` member of ``z``, its sizes (archive entry and .npy header) checked against ``limit``
    and against each other before it is inflated; every failure is an ``error`` naming ``where``."""
    if info.file_size > limit + 4096:
        raise error(f"{where} inflates to {info.file_size} bytes ({size_text(info.file_size)}), more than the "
                    f"limit of {size_text(limit)} for one array; the file is damaged or not what it claims")
    try:
        with z.open(info) as f:
            shape, fortran, dtype = _npy_header(f, where, error)
            n = math.prod(shape)
            nbytes = n * dtype.itemsize
            if nbytes > limit:
                raise error(f"{where} declares shape {list(shape)} of {dtype} = {nbytes} bytes "
                            f"({size_text(nbytes)}), more than the limit of {size_text(limit)} for one array")
            if nbytes > info.file_size:
                raise error(f"{where} declares shape {list(shape)} of {dtype} ({nbytes} bytes) but the archive holds "
                            f"only {info.file_size} bytes for it; the file is truncated or damaged")
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise error(f"{where} is truncated ({len(data)} of {nbytes} bytes)")
    except NmcError:
        raise
    except ARCHIVE_ERRORS as e:
        raise error(f"{where} is damaged ({type(e).__name__}: {e})") from None
    a = np.frombuffer(data, dtype=dtype, count=n) if n else np.zeros(0, dtype)
    if fortran:
        return a.reshape(shape[::-1]).transpose().copy()
    return a.reshape(shape).copy()


def read_npz(path: str | os.PathLike, error: type[NmcError], what: str = "file", limit: int = MAX_ARRAY_BYTES,
             member_name: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """An ``.npz`` (``numpy.savez``) read with every size bounded: ``{name: array}``."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} '{p}' does not exist")
    if p.is_dir():
        raise error(f"{what} '{p}' is a folder, not an .npz file")
    out: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise error(f"{what} '{p}' holds '{info.filename}', which is not an .npy array; write the file "
                                "with numpy.savez")
                name = info.filename[:-4]
                if name in out:
                    raise error(f"{what} '{p}' holds array '{name}' twice; the file is damaged")
                a = read_npy_member(z, info, f"array '{name}' of {what} '{p}'", error, limit)
                total += a.nbytes
                if total > limit:
                    raise error(f"{what} '{p}' holds more than {size_text(limit)} of arrays; split it")
                out[name] = a
    except NmcError:
        raise
    except ARCHIVE_ERRORS as e:
        raise error(f"{what} '{p}' is not a readable .npz ({type(e).__name__}: {e}); write it with numpy.savez") \
            from None
    return out

"""Build, cache and load erc's small C kernels (``erc/heads/cpu/kernels/*.c``) for CPU training.

On first use a kernel's C file (and the shared ``kernels/*.h``) is compiled with the system C
compiler (``$CC``, else ``cc``, else ``gcc``) into a shared library cached under
``$ERC_CACHE_DIR`` (default ``~/.cache/erc``) in ``kernels/``, keyed by the sources, the flags,
the compiler's version and this machine, so a later process loads it in milliseconds. The folder
must be writable by this user only (a UserError otherwise), and a library is loaded only when the
stamp beside it holds its key and its SHA-256 (:mod:`erc.heads.cpu.trust`); else it is rebuilt.
:func:`load` returns None (and warns once) when there is no compiler or the build fails, or when
the one switch ``ERC_CPU_KERNELS`` turns the kernel off (:func:`enabled`); every kernel has a
PyTorch path that then runs instead (slower, and other rounding: :func:`loaded` says which ran,
and runs record it in ``metrics.json``). Processes that need the same build at once take turns
(a file lock): one compiles, the others load its library. Compile and link are two steps, so
``-ffast-math`` never reaches the link (see :func:`build`).

Calls on disjoint ranges of work run on ``torch.get_num_threads()`` Python threads
(:func:`run_parallel`; ctypes releases the GIL during a call).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from erc.errors import UserError
from erc.heads.cpu import trust

KERNEL_DIR = Path(__file__).with_name("kernels")
SWITCH = "ERC_CPU_KERNELS"
BASE_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC"]  # compile flags; the link step adds -shared
DTYPE_NAMES = {torch.float32: "f32", torch.bfloat16: "bf16"}  # the attention kernel's suffixes for these dtypes

# generous: a build that times out falls back to PyTorch (other rounding), and a loaded machine
# can take minutes for what takes seconds when quiet
BUILD_TIMEOUT_S = 900

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool there."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _cpu_key() -> str:
    """What the compiled code depends on besides the source: ``-march=native`` ties it to the CPU
    (the host name too, so that a home directory shared by different machines never hands one
    of them another's build)."""
    info = f"{platform.machine()} {platform.node()}\n"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    info += line
                if info.count("\n") >= 3:
                    break
    except OSError:
        info += platform.processor()
    return info


def enabled(kernel: str) -> bool:
    """Whether ``ERC_CPU_KERNELS`` lets ``kernel`` ("scan", "attention") run: unset, "1" or "all":
    every kernel; "0" or "none": none; a comma list (e.g. "scan"): only those."""
    value = os.environ.get(SWITCH, "1").strip().lower()
    if value in ("", "1", "all", "on", "true", "yes"):
        return True
    if value in ("0", "none", "off", "false", "no"):
        return False
    return kernel in {v.strip() for v in value.split(",")}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def cache_dir() -> Path:
    """Where built kernels live: ``$ERC_CACHE_DIR/kernels`` (default ``~/.cache/erc/kernels``)."""
    root = os.environ.get("ERC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "erc") / "kernels"


def check_cache() -> None:
    """Before any work: UserError when a kernel may run and its cache folder is writable by other
    users (what :func:`build` refuses later, in the first forward pass)."""
    if any(enabled(k) for k in ("scan", "attention")) and _compiler() is not None:
        trust.make_private(cache_dir())


def build(name: str, flags: list[str]) -> ctypes.CDLL:
    """Compile ``kernels/<name>.c`` with ``flags`` (unless a build with the same key exists) and load it.

    Raises RuntimeError when there is no compiler or the compiler fails."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc / gcc) on PATH")
    source = KERNEL_DIR / f"{name}.c"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S).stdout
    headers = b"".join(h.read_bytes() for h in sorted(KERNEL_DIR.glob("*.h")))  # included by the sources
    full_key = hashlib.sha256(source.read_bytes() + headers + " ".join(flags).encode() + version.encode()
                              + _cpu_key().encode()).hexdigest()
    key = full_key[:16]
    out_dir = cache_dir()
    lib_path = out_dir / f"{name}-{key}.so"
    trust.make_private(out_dir)  # code is loaded from here: this user's folder only
    with _build_lock(out_dir / f"{name}.lock"):  # one process compiles; the others wait, then load it
        if not trust.stamp_matches(lib_path, full_key):  # absent, of an older erc, replaced or damaged
            _compile(cc, source, flags, out_dir, lib_path)
            trust.write_stamp(lib_path, full_key)
    return ctypes.CDLL(str(lib_path))


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (``fcntl.flock``; none where it is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _compile(cc: str, source: Path, flags: list[str], out_dir: Path, lib_path: Path) -> None:
    """Compile ``source`` into ``lib_path`` (built aside, then renamed)."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    obj = tmp[:-3] + ".o"
    try:
        # compile and link apart: the link step never sees -ffast-math, so gcc (before 13) does not
        # add crtfastmath.o, whose constructor would set flush-to-zero / denormals-are-zero in
        # the loading thread and change every later float operation of the process
        for cmd in ([cc, *flags, f"-I{KERNEL_DIR}", "-c", str(source), "-o", obj],
                    [cc, "-shared", obj, "-o", tmp, "-lm"]):
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if res.returncode != 0:
                raise RuntimeError(f"{cc} failed: {res.stderr.strip()[:500]}")
        os.replace(tmp, lib_path)
    finally:
        for path in (tmp, obj):
            if os.path.exists(path):
                os.unlink(path)


def load(kernel: str, name: str, flags: list[str], declare: Callable[[ctypes.CDLL], None],
         what: str) -> ctypes.CDLL | None:
    """The C file ``name`` of ``kernel`` built and declared (``declare`` sets argtypes), or None when
    :func:`enabled` says no or it cannot be built; a failed build is tried once per process and
    reported once as a RuntimeWarning that names ``what`` runs instead."""
    if not enabled(kernel):
        return None
    if name in _libs:
        return _libs[name]
    with _lock:
        if name not in _libs:
            try:
                lib = build(name, flags)
                declare(lib)
            except UserError:  # a cache folder others can write: refused, not worked around
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "use the PyTorch path"
                warnings.warn(f"erc: the C kernel {name!r} is unavailable ({exc}); {what}",
                              RuntimeWarning, stacklevel=3)
                lib = None
            _libs[name] = lib
    return _libs[name]


def loaded() -> dict[str, bool]:
    """The C files this process has tried to load: name -> whether it runs (False: its PyTorch
    fallback runs instead; the numbers differ from a run with the kernel in rounding)."""
    return {name: lib is not None for name, lib in sorted(_libs.items())}


def run_parallel(calls: list[Callable[[], None]]) -> None:
    """Run ``calls`` (kernel calls on disjoint work) on a shared thread pool, the first one here."""
    global _pool, _pool_size
    if len(calls) == 1:
        calls[0]()
        return
    if _pool is None or _pool_size < len(calls) - 1:
        _pool, _pool_size = ThreadPoolExecutor(max_workers=len(calls) - 1, thread_name_prefix="erc-kernel"), len(calls) - 1
    futures = [_pool.submit(c) for c in calls[1:]]
    calls[0]()
    for f in futures:
        f.result()

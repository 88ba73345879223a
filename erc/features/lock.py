"""One writer per cache: an advisory lock file beside it (``<cache>.lock``, ``flock``) that holds
the writer's pid and host. A second writer stops at once with one line naming that pid; the kernel
releases the lock when its holder exits, so a killed run (``kill -9``) never leaves it stuck."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from erc.errors import UserError
from erc.features.schema import lock_path


class CacheBusy(UserError):
    """Another process is writing the cache."""


class CacheLock:
    """``with CacheLock(cache): ...`` or :meth:`acquire` / :meth:`release`. ``lock_file``: where the
    lock lives (default ``<cache>.lock`` beside it; a run folder keeps its own inside)."""

    def __init__(self, cache: Path, lock_file: Path | None = None) -> None:
        self.cache = Path(cache)
        self.path = Path(lock_file) if lock_file is not None else lock_path(self.cache)
        self.fd: int | None = None

    def acquire(self) -> CacheLock:
        """Take the lock, or raise :class:`CacheBusy` naming the holder. Raises OSError when the
        folder cannot be written (see :func:`erc.features.faults.disk_errors`)."""
        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                os.close(fd)
                who = f"pid {holder[0]}" if holder else "another process"
                if len(holder) > 1 and holder[1] != socket.gethostname():
                    who += f" on {holder[1]}"
                raise CacheBusy(f"{self.cache} is being written by {who}; wait for it to finish "
                                f"(or stop it), then re-run") from None
            # The file may have been removed by the holder that released it just before we locked
            # our descriptor: then our lock guards nothing, so start again on the current file.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (mine.st_ino, mine.st_dev) != (current.st_ino, current.st_dev):
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            except OSError:
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it (see acquire)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> CacheLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

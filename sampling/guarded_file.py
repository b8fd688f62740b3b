"""The file the dataset writer's HDF5 library writes through, so that a failed write stays ours.

HDF5 does not survive a failed write: after ``ENOSPC`` its flush fails, closing the file fails,
and the process crashes later when the library releases the file (measured with h5py 3.16 and
HDF5 2.0 on a 2 MiB tmpfs: SIGSEGV at exit, after tracebacks from ``ObjectID.__dealloc__``). The
writer therefore opens its file through h5py's file-object driver on a :class:`GuardedFile`.
From the first write, truncation or fsync the operating system refuses, the file stops writing
to the disk and keeps what HDF5 writes in memory, so HDF5 reads back what it wrote, stays
consistent and closes cleanly; :attr:`GuardedFile.failure` holds the error and the writer stops
the run with one line. The file on the disk is then torn; the run journal rebuilds it
(``docs/dataset.md``).

The file is locked (``flock``, exclusive) while open for writing: a second writer of the same
output is refused instead of interleaving its writes with the first one's (on a file system
without locks it is written unlocked, as HDF5 itself does there).
"""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

_OPEN_FLAGS = {"w": os.O_RDWR | os.O_CREAT, "r+": os.O_RDWR}


class FileLocked(Exception):
    """Another process holds the file open for writing."""


class GuardedFile(io.RawIOBase):
    """A seekable binary file for h5py's ``fileobj`` driver whose write errors are contained.

    ``mode`` is ``"w"`` (create or empty the file) or ``"r+"`` (an existing file). Raises
    :class:`FileLocked` when another process writes the file, OSError when it cannot be opened.
    """

    def __init__(self, path: str | Path, mode: str):
        super().__init__()
        self.path = Path(path)
        self._fd = os.open(self.path, _OPEN_FLAGS[mode], 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise FileLocked(str(self.path))
        except OSError:
            pass  # a file system without locks (some NFS and Lustre mounts): write unlocked
        if mode == "w":
            os.ftruncate(self._fd, 0)  # only once the lock is ours
        self._pos = 0
        self._size = os.fstat(self._fd).st_size
        self.failure: OSError | None = None
        # What HDF5 wrote after the failure, in write order: (offset, bytes).
        self._kept: list[tuple[int, bytes]] = []

    # -- the io interface h5py's driver uses --------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` from the current position: the disk's bytes, zeros beyond its end,
        overlaid by whatever was kept in memory after a failure."""
        view = memoryview(buffer).cast("B")
        n = len(view)
        try:
            data = os.pread(self._fd, n, self._pos)
        except OSError as exc:
            self.failure = self.failure or exc
            raise
        view[:len(data)] = data
        view[len(data):] = bytes(n - len(data))
        for offset, kept in self._kept:
            lo, hi = max(offset, self._pos), min(offset + len(kept), self._pos + n)
            if lo < hi:
                view[lo - self._pos:hi - self._pos] = kept[lo - offset:hi - offset]
        self._pos += n
        return n

    def write(self, buffer) -> int:
        """Write ``buffer`` at the current position; after a failure, keep it in memory."""
        view = memoryview(buffer).cast("B")
        if self.failure is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as exc:
                self.failure = exc
        if self.failure is not None:
            self._kept.append((self._pos, view.tobytes()))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.failure = exc
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing is buffered here; :meth:`sync` makes the file durable."""

    # -- durability ---------------------------------------------------------------------------------
    def sync(self) -> None:
        """fsync the file, then drop its pages from the page cache, so that a later read comes
        from the disk itself. A refused fsync becomes :attr:`failure`."""
        if self.failure is not None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.failure = exc
            return
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)  # releases the lock
        super().close()

"""Small file-system helpers: atomic replace and exclusive locks with a deadline."""

import errno
import fcntl
import os
import time

from . import chars


def atomic_write(path, data, mode=0o644):
    """Replace `path` with `data` (str or bytes) so readers see the old or the new file, never a mix.

    Temp file in the same directory, fsync, rename, fsync of the directory. On any error
    the temp file is removed and the original is untouched.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    prefix = ".%s.tmp-" % os.path.basename(path)
    remove_stale(directory, prefix)
    tmp = os.path.join(directory, "%s%d" % (prefix, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(directory)


def remove_stale(directory, prefix):
    """Delete `<prefix><pid>...` files of processes that are gone.

    A writer killed between creating its temp file and renaming it (rpcd's SIGKILL, a
    power cut) left the temp file behind, and every such kill added one more to
    /etc/config on flash (issue 9). Files of live processes are left alone; a reused pid
    only delays the clean-up.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = chars.digit_prefix(name[len(prefix):]) if name.startswith(prefix) else ""
        if pid and int(pid) != os.getpid() and not _alive(int(pid)):
            _unlink_quietly(os.path.join(directory, name))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True     # exists, but not ours to signal
    return True


def remove_file(path):
    """Delete a file if it exists; fsync its directory so the removal survives a crash."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _fsync_dir(os.path.dirname(path) or ".")
    return True


def read_text(path, default=None):
    """The file's text exactly as stored. newline="": the default universal-newline mode
    turned every '\r' into '\n', so the first edit through the API rewrote a CRLF config
    (or a value holding a carriage return) that the user never touched (issue 9)."""
    try:
        with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return default


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LockTimeout(Exception):
    pass


class FileLock:
    """An exclusive flock on `path`, given up after `timeout` seconds (None: wait forever).

    flock locks die with their process, so a writer killed with SIGKILL never leaves a
    stale lock behind.
    """

    def __init__(self, path, timeout=None, poll=0.02):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                    os.close(fd)
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(self.path) from None
                time.sleep(self.poll)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
        return False


def lock_held(path):
    """Whether someone holds the FileLock at `path` right now (probed, never waited for)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)

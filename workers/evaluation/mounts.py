"""Child side of sandbox_user.exposure_plan: a private mount namespace in which each
root-only directory on the way to the interpreter is covered by an empty tmpfs, with just
the needed paths mounted back. Runs as root, before the uid switch; any failure means
the switch is skipped (the child would not find its own interpreter)."""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # x86_64 and aarch64 share these numbers
OPEN_TREE_CLONE, AT_RECURSIVE, AT_FDCWD = 1, 0x8000, -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _cover(libc, blocked: str, keep: list[str]) -> None:
    # detached copies of what stays visible, taken before the tmpfs hides it
    trees = [_check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE),
                    f"open_tree {path}") for path in keep]
    _check(libc.mount(b"tmpfs", blocked.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"),
           f"tmpfs on {blocked}")
    for path, fd in zip(keep, trees):
        os.makedirs(path, mode=0o755, exist_ok=True)  # inside the fresh tmpfs
        _check(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"move_mount {path}")
        os.close(fd)


def expose(plan: list) -> bool:
    """Apply the plan in a new mount namespace. True when there was nothing to do or all of it worked."""
    if not plan:
        return True
    libc = _libc()
    try:
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # our mounts must not propagate back to the host's namespace
        _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for blocked, keep in plan:
            _cover(libc, blocked, keep)
        return True
    except OSError:
        return False

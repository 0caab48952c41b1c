"""The unprivileged identity a sandboxed child runs as when the worker is root.

Each child gets a uid of its own from a pool (first_uid .. first_uid + pool - 1), all sharing
the group first_uid: unassigned ids, so no host file belongs to them. A slot is held with an
flock on a root-only lock file for as long as the child runs, so two concurrent children never
share a uid; the lock dies with the worker, so a crashed worker frees its slots. A worker that
is not root runs its children under its own uid, mapped into a user namespace.
"""
from __future__ import annotations

import fcntl
import os
import random
import tempfile
from dataclasses import dataclass

LOCK_DIR = os.path.join(tempfile.gettempdir(), "kturn-sandbox-uids")


@dataclass
class SandboxUser:
    uid: int
    gid: int
    lock_fd: int

    def release(self) -> None:
        os.close(self.lock_fd)  # closing the only descriptor drops the flock


def acquire(first_uid: int, pool: int) -> SandboxUser | None:
    """A free uid of the pool; None when not root, switched off (first_uid 0) or all busy."""
    if os.geteuid() != 0 or not first_uid or pool < 1:
        return None
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    # a random free slot, not the lowest: what one child leaves with its uid (a key in the uid's
    # kernel keyring, say) is unlikely to meet the next child
    for slot in random.sample(range(pool), pool):
        fd = os.open(os.path.join(LOCK_DIR, f"{slot}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return SandboxUser(uid=first_uid + slot, gid=first_uid, lock_fd=fd)
    return None

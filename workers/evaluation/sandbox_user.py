"""The unprivileged identity a candidate runs as when the harness itself is root.

Each candidate child gets a uid of its own from a pool (sandbox_uid .. sandbox_uid +
sandbox_uid_pool - 1), all sharing the group sandbox_uid. A single shared uid would not
separate candidates from each other: same-uid processes can read each other's 0700
directories, and a later candidate could chmod an earlier one's cached build writable
again. A slot is held with an flock on a root-only lock file for as long as the child
runs, so two concurrent candidates (threads or processes) never share a uid; the lock
dies with the worker, so a crashed worker frees its slots.

Not root (a developer's machine): no switch, today's behaviour.
"""
from __future__ import annotations

import fcntl
import os
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


def can_switch() -> bool:
    return os.geteuid() == 0


def acquire(first_uid: int, pool: int) -> SandboxUser | None:
    """A free uid of the pool, or None when not root, the feature is off or all are busy
    (the caller then runs the child as it did before, and records that)."""
    if not can_switch() or not first_uid or pool < 1:
        return None
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    for slot in range(pool):
        fd = os.open(os.path.join(LOCK_DIR, f"{slot}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return SandboxUser(uid=first_uid + slot, gid=first_uid, lock_fd=fd)
    return None


def hand_over(path: str, user: SandboxUser | None) -> None:
    """Make a directory the candidate's own: its uid, mode 0700 (nobody else's uid can enter)."""
    if user is None:
        return
    os.chown(path, user.uid, user.gid)
    os.chmod(path, 0o700)


def drop_privileges(uid: int, gid: int) -> None:
    """In the child: supplementary groups first, then gid, then uid (after setuid we could
    no longer change the others). Raises when it fails: the child must not run as root
    after the parent decided it would not."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


# --- reaching the interpreter -----------------------------------------------------------------
# The interpreter, the harness or the extension cache may live under a directory only root
# can enter (pyenv in /root, pytest's /tmp/pytest-of-root). The child then covers such a
# directory with an empty tmpfs in a mount namespace of its own and mounts back only the
# paths it needs: the rest of it (credentials in /root) is not even visible.

def _blocked_ancestor(path: str) -> str | None:
    """The first directory on the way to path that other uids cannot pass, or None."""
    current = "/"
    for part in os.path.abspath(path).strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def exposure_plan(paths: list[str]) -> list[list]:
    """[[blocked dir, [paths under it]], ...]: what the child must mount back."""
    plan: dict[str, list[str]] = {}
    for path in paths:
        path = os.path.realpath(path)
        blocked = _blocked_ancestor(path)
        if blocked and path not in plan.setdefault(blocked, []):
            plan[blocked].append(path)
    # first blocked ancestors never nest: one inside another would not be the first
    return [[d, ps] for d, ps in sorted(plan.items())]

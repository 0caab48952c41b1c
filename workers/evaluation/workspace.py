"""Private directories of one evaluation pass, removed afterwards.

  <root>/ref          reference child: cwd/HOME, its job (with the secret seeds), expected outputs
  <root>/cand         candidate child: cwd/HOME
  <root>/cand/inputs  inputs written by the reference child, deleted by the candidate after loading
  <root>/cand/outputs candidate outputs, read by the parent

The reference directory is deleted before the candidate starts, so expected outputs and
seeds exist only in the parent's memory while candidate code runs.

When candidates run as a uid of their own, <root> is 0711 (the candidate may pass through
to its own directory but not list the workspace) and <root>/cand and everything the
candidate writes to are handed to its uid, mode 0700; files the parent and the reference
put there stay root's and world-readable, so the candidate can read them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from . import sandbox_user

PREFIX = "kturn-eval-"
STALE_AFTER_S = 60.0


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_orphans(base: str | None = None) -> None:
    """Remove workspaces whose owning process died without cleaning up (a killed worker)."""
    base = base or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name[len(PREFIX):].split("-", 1)
        if not name.startswith(PREFIX) or len(parts) != 2 or not parts[0].isdigit():
            continue
        path = os.path.join(base, name)
        try:
            old = time.time() - os.stat(path).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if old and not _owner_alive(int(parts[0])):
            shutil.rmtree(path, ignore_errors=True)


class Workspace:
    def __init__(self) -> None:
        sweep_orphans()
        self.root = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        self.ref = self._make("ref")
        self.cand = self._make("cand")
        self.inputs = self._make("cand", "inputs")
        self.outputs = self._make("cand", "outputs")

    def _make(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def write(self, directory: str, name: str, text: str) -> str:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def write_job(self, directory: str, job: dict) -> str:
        return self.write(directory, "job.json", json.dumps(job))

    def hand_over(self, user) -> None:
        """Give the candidate's directories to its uid (user: sandbox_user.SandboxUser or None)."""
        if user is None:
            return
        os.chmod(self.root, 0o711)
        for path in (self.cand, self.inputs, self.outputs, os.path.join(self.cand, "tmp")):
            os.makedirs(path, mode=0o700, exist_ok=True)
            sandbox_user.hand_over(path, user)

    def drop_reference(self) -> None:
        shutil.rmtree(self.ref, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

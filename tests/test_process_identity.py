"""A claim's holder is judged ended only when it certainly has: a process of this machine (host name
and boot id) and pid namespace whose pid no longer runs the process that claimed."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from orchestrator.process_identity import is_gone, this_process

SAY_WHO = "from orchestrator.process_identity import this_process; print(this_process(), flush=True); import sys; sys.stdin.read()"


def child_identity() -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", SAY_WHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_a_running_process_is_not_gone():
    child, identity = child_identity()
    try:
        assert not is_gone(this_process()) and not is_gone(identity)
    finally:
        child.kill()
        child.wait()


def test_an_ended_process_is_gone_even_before_it_is_reaped():
    child, identity = child_identity()
    child.kill()
    while open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.01)
    assert is_gone(identity)  # a zombie only waits to be reaped
    child.wait()
    assert is_gone(identity)


def test_a_reused_pid_is_another_process():
    host, pid, boot, namespace, started = this_process().split(":")
    assert is_gone(f"{host}:{pid}:{boot}:{namespace}:{int(started) - 1}")
    assert is_gone(f"{host}:999999999:{boot}:{namespace}:{started}")  # no such process


def test_what_this_process_cannot_judge_is_left_to_the_lease():
    host, pid, boot, namespace, started = this_process().split(":")
    ended = int(started) - 1
    assert not is_gone(f"another-{host}:{pid}:{boot}:{namespace}:{ended}")
    # a cloned machine of the same name, whose first pid namespace has the same number as ours
    assert not is_gone(f"{host}:{pid}:{'0' * 32}:{namespace}:{ended}")
    assert not is_gone(f"{host}:{os.getpid()}:{boot}:{namespace}0:{ended}")  # another pid namespace
    assert not is_gone(f"{host}:999999999:{boot}:{namespace}:?")
    assert not is_gone(f"{host}:{pid}")  # a claim of an earlier version
    assert not is_gone(None)

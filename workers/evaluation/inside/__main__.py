"""Entry point of a sandboxed child:

    python -s -m workers.evaluation.inside --channel FD [--uid UID --gid GID] [--build]

When the parent runs as root, the child starts as root inside its namespaces with only
CAP_SETUID/CAP_SETGID, and its first act (before torch or any other code is imported) is to
become the unprivileged uid the parent picked and forbid itself new privileges.
"""
from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import socket
import sys

PR_SET_NO_NEW_PRIVS = 38


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop privileges")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--build", action="store_true", help="run the build sandbox's script")
    args = parser.parse_args()
    if args.uid is not None:
        drop_privileges(args.uid, args.gid)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    faulthandler.enable()  # a segfault leaves a Python traceback on stderr
    import torch  # noqa: F401  (seconds of start-up, spent while the parent is still starting the other child)
    channel = socket.socket(fileno=args.channel)
    try:
        if args.build:
            from .build import build
            build(channel)
        else:
            from .serve import serve
            serve(channel)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(0)  # skip atexit hooks and threads a solution may have left behind


if __name__ == "__main__":
    main()

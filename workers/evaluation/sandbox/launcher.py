"""The exec shim between the parent and bubblewrap (stdlib only; run as a script with -I -S).

    python -I -S launcher.py CONFIG_JSON

A fresh single-threaded interpreter joins the child's control groups and sets its resource
limits, then execs the sandbox command, so everything the sandbox starts is capped from its
first instruction. (Doing this in a Popen preexec_fn is unsafe: the worker has threads.)
"""
import json
import os
import resource
import sys

LIMITS = {"as_bytes": "RLIMIT_AS", "cpu_s": "RLIMIT_CPU", "fsize_bytes": "RLIMIT_FSIZE", "nproc": "RLIMIT_NPROC"}


def _join(procs_files: list) -> None:
    for path in procs_files:
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass  # the parent reads the membership back and records what took effect


def _limit(name: str, value: int) -> None:
    which = getattr(resource, name)
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def main() -> None:
    config = json.loads(sys.argv[1])
    _join(config["cgroup_procs"])
    _limit("RLIMIT_CORE", 0)  # a crashing torch process must not dump gigabytes
    for key, name in LIMITS.items():
        if config["limits"].get(key) is not None:
            _limit(name, config["limits"][key])
    os.execv(config["argv"][0], config["argv"])


if __name__ == "__main__":
    main()

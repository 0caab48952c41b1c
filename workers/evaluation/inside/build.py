"""The build sandbox: compile one extension from a candidate's sources and flags.

Only torch's own cpp_extension machinery and the compiler run here; the built module is not
imported (its static initialisers are candidate code). Everything is written to this
sandbox's own size-limited /tmp; the shared object reaches the parent as a file descriptor,
and a failure's log in the reply, so nothing a build does can fill the host's disk.
"""
from __future__ import annotations

import os
import tempfile

from .. import wire

LOG_TAIL = 100_000


def build(channel) -> None:
    request = wire.receive(channel)
    kind, args = request.header["kind"], dict(request.header["args"])
    directory = tempfile.mkdtemp(prefix="build-")
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension._import_module_from_library = lambda *a, **k: None  # build, never load
    reply = {"type": "built", "n": request.header.get("n")}
    try:
        if kind == "inline":
            cpp_extension.load_inline(**args, build_directory=directory, verbose=False)
        else:
            cpp_extension.load(**args, sources=_write_sources(args.pop("sources")), build_directory=directory,
                               verbose=False)
    except Exception as exc:  # the compiler's complaint is the candidate's feedback
        wire.send(channel, {**reply, "ok": False}, str(exc)[-LOG_TAIL:].encode(errors="replace"))
        return
    module = os.open(os.path.join(directory, f"{args['name']}.so"), os.O_RDONLY)
    wire.send(channel, {**reply, "ok": True}, fds=(module,))


def _write_sources(sources: list) -> list[str]:
    directory = tempfile.mkdtemp(prefix="sources-")
    paths = []
    for name, text in sources:
        path = os.path.join(directory, os.path.basename(name))
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths

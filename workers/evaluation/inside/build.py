"""The build sandbox: compile one extension from a candidate's sources and flags into the output directory.

Only torch's own cpp_extension machinery and the compiler run here; the built module is not
imported (its static initialisers are candidate code). The parent publishes the shared
object into its cache, under a key that covers everything this build was given.
"""
from __future__ import annotations

import os

from .. import wire

LOG_TAIL = 200_000


def build(channel) -> None:
    request = wire.receive(channel)
    kind, args, out = request.header["kind"], dict(request.header["args"]), request.header["out"]
    directory = os.path.join(out, "build")
    os.makedirs(directory, exist_ok=True)
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension._import_module_from_library = lambda *a, **k: None  # build, never load
    try:
        if kind == "inline":
            cpp_extension.load_inline(**args, build_directory=directory, verbose=False)
        else:
            sources = []
            for name, text in args.pop("sources"):
                path = os.path.join(out, "src", os.path.basename(name))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
                sources.append(path)
            cpp_extension.load(**args, sources=sources, build_directory=directory, verbose=False)
    except Exception as exc:  # the compiler's complaint is the candidate's feedback
        with open(os.path.join(out, "log.txt"), "w", errors="replace") as f:
            f.write(str(exc)[-LOG_TAIL:])
        wire.send(channel, {"type": "built", "ok": False, "n": request.header.get("n")})
        return
    wire.send(channel, {"type": "built", "ok": True, "n": request.header.get("n")})

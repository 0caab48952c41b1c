"""Turn a compiler log into short, relevant feedback: the first errors with a line or two
of context, with line numbers mapped from the generated build files (main.cpp / cuda.cu,
which load_inline writes with a prologue) back to the solution file."""
from __future__ import annotations

import os
import re

MAX_ERRORS = 5
MAX_FEEDBACK = 2000
MAX_LOG = 8000
GCC_DIAG = re.compile(r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<sev>fatal error|error): (?P<msg>.*)$")
NVCC_DIAG = re.compile(r"^(?P<path>\S+)\((?P<line>\d+)\): (?P<sev>error)[^:]*: (?P<msg>.*)$")
LINK_ERROR = re.compile(r"undefined reference to|undefined symbol|ld returned \d+ exit status|cannot find -l")
GUTTER = re.compile(r"^\s*\d*\s*\|")
NOISE = re.compile(r"^\[\d+/\d+\] |^FAILED: |^ninja: |^\s*(?:/\S+/)?(?:c\+\+|g\+\+|gcc|nvcc|clang\+\+) ")


def layout_for_inline(cpp_sources: list[str], cuda_sources: list[str], no_implicit_headers: bool) -> list[dict]:
    """Describe the files load_inline generates: prologue lines, then the user chunks joined by newlines."""
    files = [{"file": "main.cpp", "label": "cpp_sources", "prologue": 0 if no_implicit_headers else 1,
              "chunks": list(cpp_sources)}]
    if cuda_sources:
        files.append({"file": "cuda.cu", "label": "cuda_sources", "prologue": 0 if no_implicit_headers else 3,
                      "chunks": list(cuda_sources)})
    return files


def map_line(layout: list[dict], path: str, line: int, solution_src: str) -> str | None:
    """'solution.py:L (cpp_sources line K)' for a line in a generated file, None if outside user code."""
    entry = next((f for f in layout if f["file"] == os.path.basename(path)), None)
    if entry is None:
        return None
    offset = line - entry["prologue"]
    for index, chunk in enumerate(entry["chunks"]):
        n_lines = chunk.count("\n") + 1
        if 1 <= offset <= n_lines:
            label = entry["label"] + (f"[{index}]" if len(entry["chunks"]) > 1 else "")
            where = f"{label} line {offset}"
            start = solution_src.find(chunk) if chunk.strip() else -1
            if start >= 0:
                sol_line = solution_src.count("\n", 0, start) + offset
                return f"solution.py:{sol_line} ({where})"
            return where
        offset -= n_lines
    return None  # generated code (e.g. the pybind11 module definition)


def summarise(log: str, layout: list[dict], solution_src: str) -> tuple[str, str]:
    """(feedback, bounded_log). feedback lists the first errors, mapped where possible."""
    lines = log.splitlines()
    errors: list[str] = []
    i = 0
    while i < len(lines) and len(errors) < MAX_ERRORS:
        diag = GCC_DIAG.match(lines[i]) or NVCC_DIAG.match(lines[i])
        if diag:
            where = map_line(layout, diag["path"], int(diag["line"]), solution_src) \
                or f"{os.path.basename(diag['path'])}:{diag['line']}"
            entry = [f"{where}: {diag['sev']}: {diag['msg'].strip()}"]
            entry += _context(lines, i + 1)
            errors.append("\n".join(entry))
        elif LINK_ERROR.search(lines[i]):
            errors.append(lines[i].strip()[:300])
        i += 1
    feedback = "\n".join(errors) if errors else _fallback(lines)
    return feedback[:MAX_FEEDBACK], bounded_log(log)


def _context(lines: list[str], start: int) -> list[str]:
    """Up to two following lines when they are the compiler's source excerpt and caret."""
    context = []
    for line in lines[start:start + 2]:
        if GCC_DIAG.match(line) or NVCC_DIAG.match(line) or not GUTTER.match(line) and not line.startswith(" "):
            break
        context.append("    " + GUTTER.sub("", line).rstrip()[:200])
    return context


def _fallback(lines: list[str]) -> str:
    useful = [l for l in lines if l.strip() and not NOISE.match(l)]
    return "\n".join(useful[-15:]) or "build failed without compiler output"


BUILD_PREFIX = re.compile(r"^Error building extension '[^']*':\s*")
BUILD_PATH = re.compile(r"\S*/([\w.-]+\.(?:cpp|cu|h|cuh|o|so))\b")


def bounded_log(log: str) -> str:
    """The log without command lines, with build-directory paths shortened to file names."""
    lines = (BUILD_PREFIX.sub("", l) for l in log.splitlines())
    useful = "\n".join(BUILD_PATH.sub(r"\1", l)[:400] for l in lines if not NOISE.match(l))
    return useful[:MAX_LOG]

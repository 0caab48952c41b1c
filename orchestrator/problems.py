"""Loading reference problems: a KernelBench directory, a slime-format JSONL file, or single files.

Every problem is validated (it must define `Model`, `get_inputs` and `get_init_inputs`) before any
of a run is created; a bad one raises ProblemError naming the file and the reason.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BUNDLED_DIR = Path(__file__).with_name("data") / "problems"
REQUIRED_NAMES = ("Model", "get_inputs", "get_init_inputs")
_LEVEL_DIR = re.compile(r"^level(\d+)$")
_PROBLEM_FILE = re.compile(r"^(\d+)_.+\.py$")


class ProblemError(ValueError):
    """A problem file or line that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class ProblemSpec:
    name: str
    level: int | None
    source: str
    origin: str
    problem_id: int | None = None

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def key(self) -> str:
        return problem_key(self.name, self.level)


def problem_key(name: str, level: int | None) -> str:
    """How replay files, status tables and slime exports name a problem: `level1/19_ReLU`."""
    return f"level{level}/{name}" if level is not None else name


def validate_source(source: str, origin: str) -> None:
    try:
        tree = ast.parse(source, filename=origin)
    except SyntaxError as error:
        raise ProblemError(f"{origin}: not valid Python (line {error.lineno}: {error.msg})") from None
    defined = {node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    defined |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    missing = [name for name in REQUIRED_NAMES if name not in defined]
    if missing:
        raise ProblemError(f"{origin}: a KernelBench problem must define {', '.join(REQUIRED_NAMES)}; missing {', '.join(missing)}")


def load_file(path: Path) -> ProblemSpec:
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ProblemError(f"{path}: cannot be read ({error})") from None
    validate_source(source, str(path))
    level_match = _LEVEL_DIR.match(path.parent.name)
    id_match = _PROBLEM_FILE.match(path.name)
    return ProblemSpec(
        name=path.stem,
        level=int(level_match.group(1)) if level_match else None,
        source=source,
        origin=str(path),
        problem_id=int(id_match.group(1)) if id_match else None,
    )


def load_kernelbench_dir(root: Path) -> list[ProblemSpec]:
    level_dirs = [root] if _LEVEL_DIR.match(root.name) else sorted(p for p in root.iterdir() if p.is_dir() and _LEVEL_DIR.match(p.name))
    files = [f for d in level_dirs for f in sorted(d.glob("*.py"), key=_problem_sort_key) if _PROBLEM_FILE.match(f.name)]
    if not files:
        raise ProblemError(f"{root}: no KernelBench problems found (expected levelN/ID_Name.py)")
    return [load_file(f) for f in files]


def _problem_sort_key(path: Path) -> tuple[int, str]:
    match = _PROBLEM_FILE.match(path.name)
    return (int(match.group(1)) if match else 0, path.name)


def load_jsonl(path: Path) -> list[ProblemSpec]:
    """slime's prompt format: `prompt` (messages), `label` (the reference program), `extra_info`, `instance_id`."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ProblemError(f"{origin}: not valid JSON ({error.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise ProblemError(f"{origin}: each line needs a 'label' holding the reference program")
        extra = item.get("extra_info") or {}
        if not isinstance(extra, dict):
            raise ProblemError(f"{origin}: 'extra_info' must be an object")
        validate_source(item["label"], origin)
        name = extra.get("problem_name") or item.get("instance_id") or f"{path.stem}_{number}"
        problems.append(
            ProblemSpec(name=str(name), level=_int_or_none(extra.get("level")), source=item["label"], origin=origin, problem_id=_int_or_none(extra.get("problem_id")))
        )
    if not problems:
        raise ProblemError(f"{path}: no problems in the file")
    return problems


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def load_path(path: Path) -> list[ProblemSpec]:
    if not path.exists():
        raise ProblemError(f"{path}: no such file or directory")
    try:
        if path.is_dir():
            return load_kernelbench_dir(path)
        if path.suffix == ".jsonl":
            return load_jsonl(path)
        return [load_file(path)]
    except (OSError, UnicodeDecodeError) as error:
        raise ProblemError(f"{path}: cannot be read ({error})") from None


def load_problems(paths: Iterable[Path], levels: Iterable[int] = (), ids: Iterable[int] = ()) -> list[ProblemSpec]:
    """All problems under `paths`, filtered by level and problem id; raises ProblemError on the first bad one."""
    levels, ids = set(levels), set(ids)
    problems = [p for path in paths for p in load_path(Path(path))]
    selected = [p for p in problems if (not levels or p.level in levels) and (not ids or p.problem_id in ids)]
    if not selected:
        raise ProblemError("no problems left after filtering by level and id")
    names = [p.key for p in selected]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProblemError(f"problem names must be unique within a run: {', '.join(duplicates)}")
    return selected

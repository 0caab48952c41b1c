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
    instance_id: str | None = None  # a slime/TritonForge line's own id
    # A dataset's own turn-0 prompt (slime's `prompt`: chat messages, or one user message as text),
    # used when the run asks for it (`first_prompt: dataset`).
    prompt: list[dict[str, str]] | None = None

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def key(self) -> str:
        return problem_key(self.name, self.level)

    @property
    def stable_key(self) -> str:
        """`level2/33`: KernelBench's level and problem id, the same from its directory and from a
        slime JSONL line; the display key where the source gives no id."""
        if self.level is not None and self.problem_id is not None:
            return f"level{self.level}/{self.problem_id}"
        return self.key


def problem_key(name: str, level: int | None) -> str:
    """How replay files, status tables and slime exports name a problem: `level1/19_ReLU`."""
    return f"level{level}/{name}" if level is not None else name


def kernelbench_name(name: str, problem_id: int | None) -> str:
    """KernelBench's file stem, `33_Gemm_Scale_BatchNorm`, from a JSONL `problem_name` that may lack
    the id: two problems of a level may share a name (level2 has two Gemm_Scale_BatchNorm) and
    only the id tells them apart, as the directory's file names do."""
    if problem_id is None or _PROBLEM_FILE.match(f"{name}.py") and name.split("_", 1)[0] == str(problem_id):
        return name
    return f"{problem_id}_{name}"


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


REFERENCE_FIELDS = ("label", "reference_code", "ref_arch_src")  # slime, TritonForge variants


def load_jsonl(path: Path) -> list[ProblemSpec]:
    """slime's prompt format (TritonForge's files): `prompt` (messages or text), the reference program
    in `label`, ids in `extra_info` or at the top level (`level`, `problem_id`, `problem_name`,
    `instance_id`)."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            problems.append(_jsonl_problem(line, f"{path}:{number}", f"{path.stem}_{number}"))
    if not problems:
        raise ProblemError(f"{path}: no problems in the file")
    return problems


def _jsonl_problem(line: str, origin: str, fallback_name: str) -> ProblemSpec:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise ProblemError(f"{origin}: not valid JSON ({error.msg})") from None
    reference = next((item.get(f) for f in REFERENCE_FIELDS if isinstance(item, dict) and isinstance(item.get(f), str)), None)
    if reference is None:
        raise ProblemError(f"{origin}: each line needs a 'label' holding the reference program")
    extra = item.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise ProblemError(f"{origin}: 'extra_info' must be an object")
    validate_source(reference, origin)
    field = lambda name: extra.get(name) if extra.get(name) is not None else item.get(name)  # noqa: E731
    problem_id, instance_id = _int_or_none(field("problem_id")), field("instance_id")
    name = kernelbench_name(str(field("problem_name") or instance_id or fallback_name), problem_id)
    return ProblemSpec(name=name, level=_int_or_none(field("level")), source=reference, origin=origin, problem_id=problem_id,
                       instance_id=None if instance_id is None else str(instance_id), prompt=_prompt_messages(item.get("prompt"), origin))


def _prompt_messages(prompt, origin: str) -> list[dict[str, str]] | None:
    if prompt in (None, "", []):
        return None
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise ProblemError(f"{origin}: 'prompt' must be text or a list of {{role, content}} messages")


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
    check_unique(selected)
    return selected


def check_unique(problems: list[ProblemSpec]) -> None:
    """One problem once per run: the same KernelBench problem (level and id) or the same name twice is
    an error naming where each copy came from (file, or JSONL file:line)."""
    by_key: dict[str, list[ProblemSpec]] = {}
    for problem in problems:
        by_key.setdefault(problem.stable_key, []).append(problem)
        if problem.key != problem.stable_key:
            by_key.setdefault(problem.key, []).append(problem)
    duplicates = {tuple(p.origin for p in found): key for key, found in sorted(by_key.items(), reverse=True) if len(found) > 1}
    if duplicates:
        described = "; ".join(f"{key} at {', '.join(origins)}" for origins, key in sorted(duplicates.items(), key=lambda d: d[1])[:10])
        raise ProblemError(f"problems must be unique within a run; found twice or more: {described}")

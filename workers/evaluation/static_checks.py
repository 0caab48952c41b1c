"""Static (AST and text) checks of a candidate solution, run in the parent before any
child starts. They name suspicious code with line numbers and are a cheap first filter, not
the defence: what decides a verdict is what the parent checks at run time (outputs, its own
clock, the builds it made). Also here: which backend the code is written for, and whether an
extension's sources compute anything themselves.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from . import flags as F
from .binary_checks import is_compute_op
from .flags import FlagSet

THREAD_MODULES = {"threading", "_thread", "multiprocessing", "concurrent", "subprocess", "pty",
                  "asyncio", "torch.multiprocessing", "sched"}
THREAD_CALL_PREFIXES = ("os.fork", "os.forkpty", "os.system", "os.popen", "os.spawn", "os.exec",
                        "os.posix_spawn", "os.register_at_fork", "os.kill", "os.killpg")
TAMPER_MODULES = {"gc", "inspect", "builtins", "importlib", "signal", "faulthandler", "sys.monitoring",
                  "tracemalloc", "atexit", "runpy",
                  # kturn itself: the harness code that runs beside the solution, and the rest of it
                  "workers", "orchestrator", "db"}
# (os.environ and os._exit are deliberately absent: setting TORCH_CUDA_ARCH_LIST is common
# and exiting is a crash, handled at run time.)
TAMPER_ATTRS = {"sys.modules", "sys._getframe", "sys.settrace", "sys.setprofile", "sys.argv",
                "os.write", "os.dup", "os.dup2", "os.fdopen", "os.closerange",
                "torch._C._set_dispatch_mode", "torch.utils._python_dispatch"}
TAMPER_ATTRS |= {"sys.exc_info", "sys.exception", "sys._current_frames", "sys.last_traceback",
                 "sys.last_exc", "sys.last_value", "sys.gettrace", "sys.getprofile",
                 "traceback.walk_stack", "traceback.walk_tb", "types.FrameType", "types.TracebackType"}
TAMPER_NAMES = {"__builtins__", "__import__", "globals", "exec", "eval", "compile", "breakpoint"}
# Attributes that lead from any object a solution holds (an exception, a traceback handed to
# __exit__, a function, a generator) to the harness's frames and their globals, where the
# timer and the checks live. No kernel needs them; spelled as a string (getattr(tb, "tb_frame"),
# attrgetter) they are caught too.
INTROSPECTION_ATTRS = {
    "tb_frame", "tb_next", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace",
    "gi_frame", "cr_frame", "ag_frame", "gi_code", "cr_code", "ag_code", "gi_yieldfrom", "cr_await",
    "__traceback__", "__globals__", "__closure__", "__code__", "__defaults__", "__kwdefaults__",
}
TIMER_TARGETS = ("time", "torch.cuda.Event", "torch.cuda.synchronize", "torch.cuda.Stream",
                 "torch.cuda.current_stream", "torch.cuda.Event.elapsed_time", "torch.cuda.event")

# getattr(sys, "_getframe") and friends: the attribute names that only tampering needs
_TAMPER_LEAVES = {"_getframe", "settrace", "setprofile", "exc_info", "_current_frames", "walk_stack",
                  "walk_tb", "last_traceback"}

# torch namespace calls that allocate, describe or move data but compute nothing
ALLOWED_TORCH_CALLS = {
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "tensor", "as_tensor", "from_numpy", "arange", "is_tensor", "is_floating_point",
    "numel", "device", "dtype", "Size", "no_grad", "enable_grad", "inference_mode",
    "set_grad_enabled", "manual_seed", "get_default_dtype", "broadcast_shapes", "promote_types",
    "result_type", "finfo", "iinfo", "Tensor", "nn.Parameter", "nn.parameter.Parameter",
}
ALLOWED_TORCH_PREFIXES = ("cuda.", "utils.cpp_extension.", "nn.init.", "backends.", "library.")
NN_CONTAINER_CALLS = {"Parameter", "ParameterList", "ParameterDict", "parameter.Parameter",
                      "Buffer", "Identity"}
CPP_CALL_RE = re.compile(r"\b(?:torch|at)::(\w+)\s*\(")
LOW_PRECISION_TEXT_RE = re.compile(
    r"__half\b|\bhalf2\b|__nv_bfloat16|\bkHalf\b|\bkBFloat16\b|__float2half|__half2float|"
    r"\btl\.float16\b|\btl\.bfloat16\b")
# configuration knobs a solution may set (TF32 etc. is judged by the tolerance, not here)
ALLOWED_TORCH_SETTINGS = ("torch.backends.",)
LOW_PRECISION_ATTRS = {"torch.float16", "torch.half", "torch.bfloat16"}
LOW_PRECISION_METHODS = {"half", "bfloat16"}
REFERENCE_LOW_PRECISION_RE = re.compile(r"float16|bfloat16|\.half\(|torch\.half")
KERNEL_DEF_CALLS = {"load_inline", "load"}


@dataclass
class StaticReport:
    flags: FlagSet = field(default_factory=FlagSet)
    syntax_error: str | None = None
    defines_kernel: bool = False
    has_model_new: bool = False


def reference_is_fp32(reference_src: str) -> bool:
    return not REFERENCE_LOW_PRECISION_RE.search(reference_src or "")


def analyse(solution_src: str, reference_src: str = "") -> StaticReport:
    report = StaticReport()
    try:
        tree = ast.parse(solution_src, filename="solution.py")
    except SyntaxError as exc:
        report.syntax_error = f"solution.py line {exc.lineno}: {exc.msg}"
        if exc.text:
            report.syntax_error += f"\n    {exc.text.rstrip()}"
        return report
    aliases = _collect_aliases(tree)
    _Module(tree, aliases, report).run()
    _check_model_new(tree, aliases, report, reference_is_fp32(reference_src))
    _check_source_text(solution_src, report, reference_is_fp32(reference_src))
    if not report.defines_kernel:
        report.flags.add(F.NO_CUSTOM_KERNEL,
                         "no load_inline/cpp_extension.load call and no @triton.jit kernel in the solution")
    return report


# --- name resolution -------------------------------------------------------------

def _collect_aliases(tree: ast.AST) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def qualname(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = qualname(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _line(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


def _is_torch_compute(q: str) -> bool:
    if not q.startswith("torch."):
        return False
    rest = q[len("torch."):]
    if rest in ALLOWED_TORCH_CALLS or rest.startswith(ALLOWED_TORCH_PREFIXES):
        return False
    if rest.startswith("ops.") and not rest.startswith(("ops.aten.", "ops.prims.")):
        return False  # custom ops registered by the candidate's own extension
    return True


def _is_kernel_definition(call: ast.Call, aliases: dict[str, str]) -> bool:
    q = qualname(call.func, aliases) or ""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if q.startswith("triton.") and q.split(".")[-1] in ("jit", "autotune", "heuristics"):
        return True
    if name == "load_inline":
        return True
    return name == "load" and "cpp_extension" in q


# --- whole-module checks -----------------------------------------------------------

class _Module(ast.NodeVisitor):
    def __init__(self, tree: ast.AST, aliases: dict[str, str], report: StaticReport) -> None:
        self.tree, self.aliases, self.report = tree, aliases, report
        self.flags = report.flags

    def run(self) -> None:
        self.visit(self.tree)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(a.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module:
            self._check_module(node.module, node)
            for a in node.names:
                self._check_module(f"{node.module}.{a.name}", node)
            if node.module.split(".")[0] in ("reference", "problem") or any(a.name == "Model" for a in node.names):
                self.flags.add(F.CALLS_REFERENCE, f"{_line(node)}: imports the reference module")

    def _check_module(self, module: str, node: ast.AST) -> None:
        if module in TAMPER_ATTRS:  # from sys import _getframe, from traceback import walk_stack
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: imports {module}")
        if module in THREAD_MODULES or module.split(".")[0] in THREAD_MODULES:
            self.flags.add(F.THREADS_OR_SUBPROCESSES, f"{_line(node)}: imports {module}")
        if module in TAMPER_MODULES or module.split(".")[0] in TAMPER_MODULES:
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: imports {module}")
        if module == "os.fork" or module.startswith(THREAD_CALL_PREFIXES):
            self.flags.add(F.THREADS_OR_SUBPROCESSES, f"{_line(node)}: imports {module}")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in TAMPER_NAMES:
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: uses {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in INTROSPECTION_ATTRS:
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: uses .{node.attr} (frame/function introspection)")
        q = qualname(node, self.aliases)
        if q:
            if q in TAMPER_ATTRS or any(q.startswith(t + ".") for t in TAMPER_ATTRS):
                self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: uses {q}")
            if q.startswith(THREAD_CALL_PREFIXES):
                self.flags.add(F.THREADS_OR_SUBPROCESSES, f"{_line(node)}: uses {q}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and "/proc/" in node.value:
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: refers to /proc")
        if isinstance(node.value, str) and node.value.strip() in INTROSPECTION_ATTRS | _TAMPER_LEAVES:
            self.flags.add(F.HARNESS_TAMPERING, f"{_line(node)}: names {node.value.strip()!r} in a string")

    def visit_Call(self, node: ast.Call) -> None:
        if _is_kernel_definition(node, self.aliases):
            self.report.defines_kernel = True
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args:
            self._check_patch_target(node.args[0], node, via=func.id)
        self.generic_visit(node)

    def visit_FunctionDef(self, node) -> None:
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            q = qualname(target, self.aliases) or ""
            if q.startswith("triton.") and q.split(".")[-1] in ("jit", "autotune", "heuristics"):
                self.report.defines_kernel = True
                self._check_triton_body(node)
        self.generic_visit(node)

    def _check_triton_body(self, kernel) -> None:
        """A Triton kernel's body is Triton's language; on the CPU interpreter it runs as Python,
        where a torch call inside it (or in a plain function it calls) would be PyTorch doing the
        work under a kernel's name."""
        for node in (n for body in self._reached_from(kernel) for n in ast.walk(body)):
            q = qualname(node, self.aliases) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if q and (q == "torch" or q.startswith("torch.")) or isinstance(node, ast.Name) and node.id in ("torch", "np", "numpy"):
                self.flags.add(F.NO_CUSTOM_KERNEL, f"{_line(node)}: Triton kernel {kernel.name}() uses "
                                                   f"{q or getattr(node, 'id', 'torch')}: PyTorch would do the work")
                return

    def _reached_from(self, kernel) -> list:
        """The kernel and the module-level functions it calls by name, transitively."""
        functions = {n.name: n for n in getattr(self.tree, "body", []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        seen, todo = {kernel.name: kernel}, [kernel]
        while todo:
            for call in (n for n in ast.walk(todo.pop()) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
                callee = functions.get(call.func.id)
                if callee is not None and callee.name not in seen:
                    seen[callee.name] = callee
                    todo.append(callee)
        return list(seen.values())

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_patch_target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_patch_target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_patch_target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_patch_target(target, node)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        defines = any(isinstance(n, ast.Call) and _is_kernel_definition(n, self.aliases)
                      for stmt in node.body for n in ast.walk(stmt))
        if defines and _has_swallowing_handler(node):
            self.flags.add(F.TORCH_FALLBACK,
                           f"{_line(node)}: kernel build wrapped in try/except that does not re-raise")
        self.generic_visit(node)

    visit_TryStar = visit_Try

    def _check_patch_target(self, target: ast.AST, node: ast.AST, via: str = "") -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._check_patch_target(elt, node, via)
            return
        if via:
            base = qualname(target, self.aliases)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            base = qualname(target.value, self.aliases)
            if isinstance(target, ast.Attribute) and base:
                base = f"{base}.{target.attr}"
        else:
            return
        if not base:
            return
        what = f"{_line(node)}: {via + ' on ' if via else 'assigns to '}{base}"
        if base.startswith("torch") and not base.startswith(ALLOWED_TORCH_SETTINGS):
            self.flags.add(F.MONKEYPATCH_TORCH, what)
        if any(base == t or base.startswith(t + ".") for t in TIMER_TARGETS):
            self.flags.add(F.TIMER_TAMPERING, what)
        if base.split(".")[0] in ("sys", "builtins", "os", "gc", "inspect") and not base.startswith("os.environ"):
            self.flags.add(F.HARNESS_TAMPERING, what)


def _has_swallowing_handler(node: ast.Try) -> bool:
    for handler in node.handlers:
        if not any(isinstance(n, ast.Raise) for stmt in handler.body for n in ast.walk(stmt)):
            return True
    return False


# --- ModelNew and what its forward reaches ---------------------------------------------

def _check_model_new(tree: ast.Module, aliases: dict[str, str], report: StaticReport, ref_fp32: bool) -> None:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    model_new = classes.get("ModelNew")
    if model_new is None:
        return
    report.has_model_new = True
    flags = report.flags
    for base in model_new.bases:
        if isinstance(base, ast.Name) and base.id == "Model" or (qualname(base, aliases) or "").endswith(".Model"):
            flags.add(F.CALLS_REFERENCE, f"{_line(base)}: ModelNew inherits from the reference Model")
    methods = {n.name: n for n in model_new.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in ast.walk(model_new):
        if isinstance(node, ast.Name) and node.id == "Model" and isinstance(node.ctx, ast.Load):
            flags.add(F.CALLS_REFERENCE, f"{_line(node)}: ModelNew uses the reference Model")
    submodules = _nn_submodules(methods.get("__init__"), aliases)
    for fn in _reachable(methods, functions):
        _check_forward_body(fn, aliases, submodules, flags, ref_fp32, functions)


def _nn_submodules(init: ast.FunctionDef | None, aliases: dict[str, str]) -> dict[str, str]:
    """self.<attr> = nn.<Layer>(...) assignments: calling such an attribute runs torch."""
    found: dict[str, str] = {}
    if init is None:
        return found
    for node in ast.walk(init):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            q = qualname(node.value.func, aliases) or ""
            if q.startswith("torch.nn.") and q.split("torch.nn.", 1)[1] not in NN_CONTAINER_CALLS:
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self":
                        found[target.attr] = q
    return found


def _reachable(methods: dict, functions: dict) -> list:
    """ModelNew.forward plus methods and module-level functions it calls by name, transitively."""
    if "forward" not in methods:
        return []
    seen: dict[str, ast.AST] = {}
    todo = [("method", "forward")]
    while todo:
        kind, name = todo.pop()
        node = (methods if kind == "method" else functions).get(name)
        key = f"{kind}:{name}"
        if node is None or key in seen:
            continue
        seen[key] = node
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            f = call.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
                todo.append(("method", f.attr))
            elif isinstance(f, ast.Name):
                todo.append(("function", f.id))
    return list(seen.values())


def _check_forward_body(fn, aliases, submodules, flags: FlagSet, ref_fp32: bool, functions: dict) -> None:
    where = f"in {fn.name}()"
    for node in ast.walk(fn):
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) and _has_swallowing_handler(node):
            flags.add(F.TORCH_FALLBACK, f"{_line(node)}: try/except {where} (a fallback path around the kernel)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            flags.add(F.TORCH_COMPUTE_OPS, f"{_line(node)}: '@' matrix multiply {where}")
        elif isinstance(node, ast.Call):
            _check_forward_call(node, aliases, submodules, flags, ref_fp32, where)
        elif isinstance(node, ast.Attribute) and ref_fp32:
            q = qualname(node, aliases)
            if q in LOW_PRECISION_ATTRS:
                flags.add(F.PRECISION_DOWNGRADE, f"{_line(node)}: {q} {where} but the reference is fp32")


def _check_forward_call(node: ast.Call, aliases, submodules, flags: FlagSet, ref_fp32: bool, where: str) -> None:
    q = qualname(node.func, aliases)
    if q and _is_torch_compute(q):
        flags.add(F.TORCH_COMPUTE_OPS, f"{_line(node)}: {q}() {where}")
    f = node.func
    if isinstance(f, ast.Attribute):
        if isinstance(f.value, ast.Name) and f.value.id == "self" and f.attr in submodules:
            flags.add(F.TORCH_COMPUTE_OPS, f"{_line(node)}: calls self.{f.attr} ({submodules[f.attr]}) {where}")
        if ref_fp32 and f.attr in LOW_PRECISION_METHODS:
            flags.add(F.PRECISION_DOWNGRADE, f"{_line(node)}: .{f.attr}() {where} but the reference is fp32")


def _check_source_text(text: str, report: StaticReport, ref_fp32: bool) -> None:
    for match in CPP_CALL_RE.finditer(text):
        if is_compute_op(match.group(1)):
            line = text.count("\n", 0, match.start()) + 1
            report.flags.add(F.TORCH_COMPUTE_OPS, f"line {line}: kernel source calls {match.group(0).rstrip('( ')}")
    if ref_fp32:
        for match in LOW_PRECISION_TEXT_RE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            report.flags.add(F.PRECISION_DOWNGRADE,
                             f"line {line}: {match.group(0)} in kernel code but the reference is fp32")


COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
OWN_COMPUTE_RE = re.compile(r"__global__|\bfor\s*\(|\bwhile\s*\(|\bdo\s*\{|parallel_for|#\s*pragma\s+omp|\bvectorized?\b")


def has_own_compute(sources: list[str]) -> bool:
    """Whether an extension's sources contain computation of their own (a CUDA kernel, a loop,
    a parallel region) rather than only calls into ATen."""
    return any(OWN_COMPUTE_RE.search(COMMENT_RE.sub("", source)) for source in sources)


TRITON_RE = re.compile(r"^\s*(?:import triton|from triton\b)|@triton\.(?:jit|autotune|heuristics)", re.M)
CUDA_RE = re.compile(r"__global__|\bcuda_sources\s*=|<<<")


def detect_backend(solution_src: str) -> str:
    """The backend the code is written for: "triton", "cuda" (CUDA sources) or "cpp"."""
    if TRITON_RE.search(solution_src):
        return "triton"
    if CUDA_RE.search(solution_src):
        return "cuda"
    return "cpp"

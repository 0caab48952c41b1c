"""One evaluation pass: a reference child and a candidate child, driven batch by batch on the
same secret seeds.

    start both -> set up (the candidate's build requests served by the Builder) -> batches:
      reference go -> candidate go -> signatures compared -> byte ranges chosen at random ->
      both store them -> the candidate's checksums and values checked against the reference's
    -> the candidate's own account of its kernels -> both closed

Inputs exist nowhere before a batch asks for them (the seeds are drawn per batch), every call
is the same kind of call (there is no separate timing phase to tell apart), and which outputs
are compared is decided only after the candidate said it had computed them all.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import mmap
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field

from . import timing, wire
from .arena import Arena
from .builds import Builder, BuildRecord
from .correctness import as_tensor, compare_signatures, compare_values, dtype_of, locate
from .sandbox.child import Child, ChildFailed, ChildTimeout, Exit, Spec
from .settings import EvalSettings

FIRST_CHUNK = 1 << 30       # the reference's first batch, before output sizes are known
STORE_GRACE_S, STORE_RATE = 10.0, 50e6  # a store's time limit: seconds, plus bytes at this rate
MAX_CHECKSUMS = 16_384
MAX_STORE_ITEMS = 4096
PROBLEM, SOLUTION = "/job/problem.py", "/job/solution.py"


class ReferenceFault(Exception):
    """The reference program failed: never the candidate's fault. `transient` when running it
    again may succeed (it ran out of time, or its process died without saying why); an error it
    raised itself, or memory it needs beyond the cap, will happen again."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CandidateFault(Exception):
    """The candidate's child failed, timed out, died or broke the protocol."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.phase, self.cause = phase, cause


@dataclass
class Mismatch:
    """The candidate's outputs are not the reference's (an incorrect answer)."""
    details: dict
    tampered: str | None = None   # the stored bytes are not those the checksums described


@dataclass
class PassOutcome:
    ready: bool = False
    fault: CandidateFault | None = None
    mismatch: Mismatch | None = None
    batches: list[timing.BatchTimes] = field(default_factory=list)
    calls: int = 0
    verified_calls: int = 0
    verified_bytes: int = 0
    summary: dict | None = None
    builds: list[BuildRecord] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    candidate_exit: Exit | None = None
    reference_exit: Exit | None = None
    walls: dict = field(default_factory=dict)


WORKSPACE_PREFIX = "kturn-eval-"
STALE_AFTER_S = 60.0


def sweep_orphans(base: str | None = None) -> None:
    """Remove workspaces whose owning process died without cleaning up (a killed worker)."""
    base = base or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner = name[len(WORKSPACE_PREFIX):].split("-", 1)[0]
        if not name.startswith(WORKSPACE_PREFIX) or not owner.isdigit():
            continue
        path = os.path.join(base, name)
        try:
            stale = time.time() - os.stat(path).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if stale and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Workspace:
    """A private directory for one pass: the sources handed to the children, their stdout and
    stderr, build outputs. Removed afterwards (and by the next pass, if this worker dies)."""

    def __init__(self) -> None:
        sweep_orphans()
        self.root = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-")
        os.chmod(self.root, 0o711)

    def write(self, name: str, content: str) -> str:
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, 0o644)
        return path

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


SEAL_TRIES = 20


def seal(fd: int, seals: int) -> None:
    """Add seals to a memfd. F_SEAL_WRITE answers EBUSY while the kernel still holds references to
    pages just written (a moment after the writer is done): try again briefly."""
    for attempt in range(SEAL_TRIES):
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            return
        except OSError as error:
            if error.errno != errno.EBUSY or attempt + 1 == SEAL_TRIES:
                raise
            time.sleep(0.001 * (attempt + 1))


MADV_POPULATE_READ = 22  # Linux 5.14: map every page for reading now


@dataclass
class Handover:
    """A batch's inputs in a sealed memfd (CPU): what the reference generated, as it did, and the
    parent's view of them, populated before any window, so that copying them into either child's
    arena costs the same."""
    fd: int
    template: list
    call_bytes: int
    input_bytes: int
    view: mmap.mmap | None = None

    def check(self, calls: int) -> None:
        if not (isinstance(self.template, list) and all(isinstance(t, dict) and len(t) == 1 for t in self.template)):
            raise ValueError("malformed template")
        if not (isinstance(self.call_bytes, int) and isinstance(self.input_bytes, int)) or self.fd < 0:
            raise ValueError("no memfd or sizes")
        if os.fstat(self.fd).st_size != self.call_bytes * calls:
            raise ValueError("memfd of the wrong size")
        seal(self.fd, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        self.view = mmap.mmap(self.fd, self.call_bytes * calls, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        with contextlib.suppress(OSError):
            self.view.madvise(MADV_POPULATE_READ)

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Batch:
    """What one child said about one batch."""
    window_s: float
    signature: list
    forward_s: float                 # the reference's forward() calls (trusted; 0 for a candidate)
    credit_s: float                  # the reference's window less its forward() and output step
    checksums: list[int]             # GPU: per call, per output, per chunk
    addresses: list[list[int]]       # CPU: per call, per output, [address, bytes] in the child
    invalid: str | None
    mismatch: int | None
    input_bytes: int = 0


class Session:
    def __init__(self, reference_src: str, solution_src: str, settings: EvalSettings, toolchain: dict) -> None:
        self.reference_src, self.solution_src = reference_src, solution_src
        self.settings, self.toolchain = settings, toolchain
        self.outcome = PassOutcome()
        self.arenas = {"reference": Arena(), "candidate": Arena()}
        self.init_seed = secrets.randbits(31)
        self.chunk = FIRST_CHUNK
        self.deadline = time.monotonic() + settings.evaluation_timeout_s

    def run(self) -> PassOutcome:
        with Workspace() as ws:
            problem = ws.write("problem.py", self.reference_src)
            files = {PROBLEM: problem}
            ref = Child(Spec("reference", self.settings, ws.root, files=files))
            cand = Child(Spec("candidate", self.settings, ws.root,
                              files={**files, SOLUTION: ws.write("solution.py", self.solution_src)}))
            builder = Builder(self.settings, self.solution_src, self.toolchain, ws.root)
            fault = None
            try:
                with self._timed("start_s"):
                    for child in (ref, cand):
                        child.start()
                self.outcome.facts = cand.facts
                self._converse(ref, cand, builder)
            except ReferenceFault as error:
                fault = error
            finally:
                self.outcome.builds = builder.records
                try:
                    with self._timed("close_s"):
                        self.outcome.reference_exit = ref.close()
                        self.outcome.candidate_exit = cand.close()
                finally:
                    for arena in self.arenas.values():
                        arena.close()
        if fault is not None:
            raise out_of_memory(fault, self.outcome.reference_exit, self.settings)
        return self.outcome

    def _converse(self, ref: Child, cand: Child, builder: Builder) -> None:
        self.builder = builder
        with self._timed("setup_s"):
            self._setup(ref, cand, builder)
        self.outcome.walls["builds_s"] = round(sum(b.seconds for b in builder.records), 3)
        if not self.outcome.ready or any(not b.ok for b in builder.records):
            return
        with self._timed("batches_s"):
            calls = self._batches(ref, cand)
        if self.outcome.mismatch is not None or self.outcome.fault is not None:
            return
        with self._timed("finish_s"):
            self.outcome.summary = self._finish(cand)
        self.outcome.candidate_exit = cand.close()  # it and everything it started are gone ...
        self.arenas["candidate"].close()
        if self.outcome.summary is not None and self.outcome.batches:
            with self._timed("baseline_s"):
                self._reference_alone(ref, calls)  # ... before the reference is timed

    def _reference_alone(self, ref: Child, calls: int) -> None:
        """The baseline: the reference's timed batches, run after the candidate's process tree is
        dead, so nothing it left running (threads, GPU work) can slow the reference and inflate a
        speedup. One batch per timed batch of the candidate, the same number of calls."""
        timed = []
        for candidate in self.outcome.batches:
            seeds = [secrets.randbits(62) for _ in range(calls)]
            handover = self._make(ref, seeds) if self.settings.device == "cpu" else None
            try:
                # as the candidate's timed batches did, it finds the inputs the parent has just
                # copied into its arena, and is thawed by the request that starts the batch
                reference = reference_step(lambda: self._go(ref, seeds, self.chunk, handover, trusted=True))
            finally:
                if handover is not None:
                    handover.close()
            timed.append(timing.BatchTimes(calls, reference.window_s, reference.credit_s, candidate.candidate_window_s))
            self.outcome.walls["windows_s"] = round(self.outcome.walls["windows_s"] + reference.window_s, 4)
        self.outcome.batches = timed

    def _limit(self, per_request: float) -> float:
        """A request's time limit, within what is left of the pass's own (evaluation_timeout_s)."""
        return max(0.001, min(per_request, self.deadline - time.monotonic()))

    @contextlib.contextmanager
    def _timed(self, name: str):
        """Add the wall time of a step to the pass's phase breakdown (stored with the turn)."""
        started = time.monotonic()
        try:
            yield
        finally:
            walls = self.outcome.walls
            walls[name] = round(walls.get(name, 0.0) + time.monotonic() - started, 4)

    # --- set-up ----------------------------------------------------------------------------------

    def _setup(self, ref: Child, cand: Child, builder: Builder) -> None:
        """Both children set up at once; the candidate's build requests are served as they come."""
        limit = self._limit(self.settings.compile_timeout_s)
        ref_job = reference_step(lambda: ref.send_request(job_for(ref, "reference", self.settings, self.init_seed)))
        cand_job = self._candidate("setup", lambda: cand.send_request(job_for(cand, "candidate", self.settings, self.init_seed, self.solution_src)))
        if cand_job is None:
            return
        ready, seconds = reference_step(lambda: ref.await_reply(ref_job, "ready", limit))
        ref.inner_pid = _pid_of(ready)
        self.outcome.walls["reference_setup_s"] = round(seconds, 4)
        self.outcome.walls["reference_child"] = _diagnostic_times(ready)
        try:
            ready, seconds = cand.await_reply(cand_job, "ready", limit, serve=lambda m: builder.serve(cand, m))
            cand.inner_pid = _pid_of(ready)
            self.outcome.walls["candidate_setup_s"] = round(seconds, 4)
            self.outcome.walls["candidate_child"] = _diagnostic_times(ready)
            self.outcome.ready = True
        except (ChildFailed, ChildTimeout, wire.ProtocolError) as error:
            self.outcome.fault = CandidateFault("setup", error)

    def _finish(self, cand: Child) -> dict | None:
        try:
            reply, _ = cand.request({"type": "finish"}, "finished", self._limit(self.settings.run_timeout_s))
        except (ChildFailed, ChildTimeout, wire.ProtocolError) as error:
            self.outcome.fault = CandidateFault("run", error)
            return None
        h = reply.header
        counts = {k: h.get(k) for k in ("kernels_defined", "launches")}
        if not all(isinstance(v, int) and v >= 0 for v in counts.values()):
            self.outcome.fault = CandidateFault("run", wire.ProtocolError("malformed account of kernels"))
            return None
        return {**counts, "uncounted": bool(h.get("uncounted"))}

    # --- batches ---------------------------------------------------------------------------------

    def _plan(self) -> tuple[int, int]:
        """(warm-up batches, timed batches): at least one warm-up (it sizes the batches), and
        enough batches in all for correctness_trials calls on fresh inputs."""
        s = self.settings
        timed = s.timing_trials if s.timing_meaningful else 0
        # three warm-ups at least when timing: the first (one call) sizes the batches, the second
        # resizes them from a warm measurement, the third runs at the timed batches' size (so that
        # none of them is the first to need that much memory)
        warmups = max(3 if timed else 1, s.warmup_runs if timed else 0, s.correctness_trials - timed)
        return warmups, timed

    def _batches(self, ref: Child, cand: Child) -> int | None:
        """The interleaved batches: the reference's outputs are what the candidate's are compared
        with; the candidate's windows are its timing. The number of calls of the timed batches."""
        warmups, timed = self._plan()
        calls, chunk = 1, None
        for index in range(warmups + timed):
            seeds = [secrets.randbits(62) for _ in range(calls)]
            handover = self._make(ref, seeds) if self.settings.device == "cpu" else None
            try:
                reference = reference_step(lambda: self._go(ref, seeds, chunk or FIRST_CHUNK, handover, trusted=True))
                out_bytes = output_bytes(reference.signature)
                chunk = chunk or _chunk_size(out_bytes, calls)
                candidate = self._candidate("run", lambda: self._go(cand, seeds, chunk, handover, trusted=False,
                                                                    serve=lambda m: self.builder.serve(cand, m)))
                verified = candidate is not None and self._same_outputs(reference, candidate, out_bytes, chunk, calls) \
                    and self._verify(ref, cand, reference, candidate, out_bytes, chunk, calls)
            finally:  # the candidate stays held until its next request
                if handover is not None:
                    handover.close()
            if not verified:
                return None
            self.outcome.walls["windows_s"] = round(self.outcome.walls.get("windows_s", 0.0) + reference.window_s
                                                    + candidate.window_s, 4)
            self.outcome.calls += calls
            if index >= warmups:  # the reference's figures are replaced by its batches alone, later
                self.outcome.batches.append(timing.BatchTimes(calls, reference.window_s, reference.credit_s,
                                                              candidate.window_s))
            elif index + 1 < warmups:  # the last warm-up has the timed batches' size
                # on the CPU a call's inputs are held thrice: the sealed memfd and both arenas
                held_inputs = reference.input_bytes * (3 if self.settings.device == "cpu" else 1)
                calls = timing.calls_for(reference.forward_s / calls, self.settings.timing_batch_ms,
                                         min(self.settings.max_calls_per_batch, MAX_CHECKSUMS // 2 // max(1, len(out_bytes))),
                                         sum(out_bytes) + held_inputs, self.settings.batch_memory_mb)
                chunk = _chunk_size(out_bytes, calls)
        self.chunk = chunk
        return calls

    def _make(self, ref: Child, seeds: list[int]) -> Handover:
        return make_inputs(ref, seeds, self._limit(self.settings.run_timeout_s))

    def _go(self, child: Child, seeds: list[int], chunk: int, handover: "Handover | None", trusted: bool,
            serve=None) -> Batch:
        # a CPU child is held the moment it answers, until its next request: a candidate's
        # outputs are read from its memory as they were when the parent's clock stopped, and
        # under the freezer its arena is filled while nothing in it runs; the reference is held
        # alike, so that both windows start with the same thaw
        hold = self.settings.device == "cpu"
        allowance = self._limit(self.settings.compile_timeout_s) if serve else 0.0  # a build on the first call
        arena = self.arenas["reference" if trusted else "candidate"]
        return go(child, seeds, chunk, handover, trusted, self._limit(self.settings.run_timeout_s), arena=arena,
                  serve=serve, hold=hold, serve_allowance=allowance)

    def _candidate(self, phase: str, step):
        try:
            return step()
        except (ChildFailed, ChildTimeout, wire.ProtocolError) as error:
            self.outcome.fault = CandidateFault(phase, error)
            return None

    def _same_outputs(self, reference: Batch, candidate: Batch, out_bytes: list[int], chunk: int, calls: int) -> bool:
        trial = self.outcome.calls
        if candidate.invalid:
            self.outcome.mismatch = Mismatch({"check": "output_type", "reason": candidate.invalid, "trial": trial})
            return False
        if candidate.mismatch is not None:
            self.outcome.mismatch = Mismatch({"check": "varying_outputs", "trial": trial + candidate.mismatch})
            return False
        failure = compare_signatures(reference.signature, candidate.signature)
        if failure is not None:
            self.outcome.mismatch = Mismatch({**failure, "trial": trial})
            return False
        counted = (len(candidate.addresses), calls * len(out_bytes)) if self.settings.device == "cpu" else \
            (len(candidate.checksums), calls * sum(wire.chunk_count(b, chunk) for b in out_bytes))
        if counted[0] != counted[1]:
            self.outcome.fault = CandidateFault("run", wire.ProtocolError("wrong number of output addresses or checksums"))
            return False
        return True

    def _verify(self, ref: Child, cand: Child, reference: Batch, candidate: Batch, out_bytes: list[int],
                chunk: int, calls: int) -> bool:
        """Take randomly chosen ranges of both children's outputs and compare the candidate's with
        the reference's, an output position at a time. CPU: read from the children's memory (the
        candidate frozen since it answered). GPU: stored by the children into sealed memfds, the
        candidate's checked against the checksums it sent before the parent's clock stopped."""
        ranges = _choose(out_bytes, chunk, calls, self.settings.verify_mb_per_batch << 20)
        first = self.outcome.calls
        with self._timed("verify_s"):
            expected = reference_step(lambda: self._collect(ref, reference, ranges, out_bytes))
            got = self._candidate("run", lambda: self._collect(cand, candidate, ranges, out_bytes))
            if got is None:
                return False
            tampered = got if isinstance(got, str) else self._unlike_checksums(candidate, ranges, got, out_bytes, chunk)
            if tampered:
                self.outcome.mismatch = Mismatch({"check": "tampered", "trial": first}, tampered=tampered)
                return False
            for output, (shape, dtype, _) in enumerate(reference.signature):
                failure = _compare_output(output, dtype, ranges, expected, got, self.settings)
                if failure is not None:
                    call, start = failure.pop("at")
                    failure["examples"] = locate(failure.get("examples", []), start, shape)
                    self.outcome.mismatch = Mismatch({**failure, "trial": first + call, "output_index": output})
                    return False
        self.outcome.verified_bytes += len(got)
        self.outcome.verified_calls += len({call for call, *_ in ranges})
        return True

    def _collect(self, child: Child, batch: Batch, ranges: list, out_bytes: list[int]) -> bytes | str:
        """The chosen ranges' bytes, one after the other (a string: the child kept a way to change them)."""
        if self.settings.device != "cpu":
            # an untimed step: as long as moving these bytes can honestly take, not a whole request's limit
            total = sum(r[3] for r in ranges)
            return _store(child, ranges, self._limit(min(self.settings.run_timeout_s, STORE_GRACE_S + total / STORE_RATE)))
        parts = []
        for call, output, start, length in ranges:
            address, size = batch.addresses[call * len(out_bytes) + output]
            if size != out_bytes[output]:
                raise wire.ProtocolError("an output's size differs from its signature")
            try:
                parts.append(child.read(address + start, length))
            except OSError as error:
                return f"the output of call {call} could not be read where the solution said it was ({error})"
        return b"".join(parts)

    def _unlike_checksums(self, candidate: Batch, ranges: list, got: bytes, out_bytes: list[int], chunk: int) -> str | None:
        """GPU: the stored bytes must be the ones the checksums described before the clock stopped."""
        if self.settings.device == "cpu":
            return None
        calls = len(candidate.checksums) // max(1, sum(wire.chunk_count(b, chunk) for b in out_bytes))
        offsets, stored, position = _checksum_offsets(out_bytes, chunk, calls), memoryview(got), 0
        for call, output, start, length in ranges:
            if wire.checksum(stored[position:position + length]) != candidate.checksums[offsets[call][output] + start // chunk]:
                return (f"the bytes of output {output} (call {call}) differ from the checksum sent when the batch was "
                        "reported computed")
            position += length
        return None


def _compare_output(output: int, dtype: str, ranges: list, expected: bytes, got: bytes, settings) -> dict | None:
    """Compare every stored range of one output position at once; on a mismatch, say which call
    and which element of it (the examples' positions made relative to that range)."""
    element = dtype_of(dtype).itemsize
    spans, position = [], 0
    for call, out, start, length in ranges:
        if out == output:
            spans.append((position, length, call, start))
        position += length
    if not spans:
        return None
    want = b"".join(expected[p:p + n] for p, n, _, _ in spans)
    have = b"".join(got[p:p + n] for p, n, _, _ in spans)
    failure = compare_values(as_tensor(want, dtype), as_tensor(have, dtype), settings)
    if failure is None:
        return None
    first_bad = failure["examples"][0]["position"] if failure.get("examples") else 0
    seen = 0
    for _, length, call, start in spans:
        count = length // element
        if first_bad < seen + count:
            for example in failure.get("examples", []):
                example["position"] -= seen
            failure["examples"] = [e for e in failure.get("examples", []) if 0 <= e["position"] < count]
            failure["at"] = (call, start // element)
            return failure
        seen += count
    failure["at"] = (spans[0][2], spans[0][3] // element)
    return failure


def out_of_memory(fault: ReferenceFault, exit_: Exit | None, settings: EvalSettings) -> ReferenceFault:
    """A reference killed at the memory cap will be killed there again: not worth a retry."""
    if exit_ is not None and exit_.oom_killed:
        return ReferenceFault(f"the reference program needs more memory than the cap of {settings.memory_limit_mb} MB "
                              "(memory_limit_mb)", transient=False)
    return fault


def job_for(child: Child, role: str, settings: EvalSettings, init_seed: int, solution_src: str = "") -> dict:
    """The request that sets a child up: import the problem (and the solution), build the model."""
    job = {"type": "job", "role": role, "device": settings.device, "cpu_threads": settings.cpu_threads,
           "init_seed": init_seed, "problem_path": child.path_for(PROBLEM)}
    if role == "candidate":
        job.update(solution_path=child.path_for(SOLUTION),
                   use_triton=settings.backend == "triton" or "triton" in solution_src)
    return job


# --- one batch ------------------------------------------------------------------------------------------

def make_inputs(ref: Child, seeds: list[int], timeout: float) -> Handover:
    """The CPU path: the reference generates a batch's inputs into a memfd, which the parent seals
    before it copies them into the children's arenas."""
    # held until the request that starts the batch thaws it, as the candidate is since its last batch
    reply, _ = reference_step(lambda: ref.request({"type": "make", "seeds": seeds}, "made", timeout, hold=True))
    handover = Handover(fd=reply.fds[0] if reply.fds else -1, template=reply.header.get("template"),
                        call_bytes=reply.header.get("call_bytes"), input_bytes=reply.header.get("input_bytes"))
    wire.close_all(reply.fds[1:])
    try:
        handover.check(len(seeds))
    except (OSError, ValueError) as error:
        handover.close()
        raise ReferenceFault(f"the reference child handed over unusable inputs: {error}") from None
    return handover


def go(child: Child, seeds: list[int], chunk: int, handover: Handover | None, trusted: bool, timeout: float,
       arena: Arena | None = None, serve=None, hold: bool = False, serve_allowance: float = 0.0) -> Batch:
    """One batch: the request that starts it (on the CPU, with the inputs copied into the child's
    arena), the child's answer, its window."""
    request, inside = {"type": "go", "calls": len(seeds), "chunk_bytes": chunk}, None
    if handover is None:
        request["seeds"] = seeds
    else:
        length = handover.call_bytes * len(seeds)
        if arena.size < length:
            _hand_arena(child, arena, length, timeout, hold)
        copy = lambda: _fill(arena, handover.view, length)  # noqa: E731
        if child.frozen_whole:  # nothing in the child can run: the copy stays out of its window
            copy()
        else:  # signals can be undone by the child's own processes: the copy is inside its window
            inside = copy
        request.update(template=handover.template, call_bytes=handover.call_bytes)
    reply, window = child.request(request, "computed", timeout, serve=serve, hold=hold,
                                  serve_allowance=serve_allowance, inside=inside)
    batch = _parse_computed(reply, window, len(seeds), chunk, trusted)
    if handover is not None and trusted:
        batch.input_bytes = handover.input_bytes
    return batch


def _hand_arena(child: Child, arena: Arena, size: int, timeout: float, hold: bool) -> None:
    """An untimed request: the child maps and populates a new arena (its pages charged to it)."""
    try:
        fd = arena.grow(size)
    except OSError as error:
        raise ReferenceFault(f"no memory for a batch's inputs ({size} bytes): {error}", transient=True) from None
    child.request({"type": "arena"}, "mapped", timeout, fds=(fd,), hold=hold)


def _fill(arena: Arena, source, length: int) -> None:
    if arena.has_hole():  # the child's doing (the parent never frees arena pages): its fault
        raise wire.ProtocolError("the memory its inputs arrive in was given back (pages removed from it)")
    arena.fill(source, length)


# --- helpers ----------------------------------------------------------------------------------------------

def _diagnostic_times(reply: wire.Message) -> dict:
    times = reply.header.get("times")
    if not isinstance(times, dict):
        return {}
    return {str(k)[:40]: round(float(v), 4) for k, v in list(times.items())[:10]
            if isinstance(v, (int, float)) and 0 <= v < 1e6}


def reference_step(step):
    """Run a step of the reference's conversation; its failures become ReferenceFault."""
    try:
        return step()
    except ChildFailed as error:
        h = error.header
        raise ReferenceFault(f"the reference program failed: {h.get('message', '')}\n{h.get('traceback', '')}".strip()) from None
    except ChildTimeout:
        raise ReferenceFault("the reference program did not answer within its time limit", transient=True) from None
    except wire.ProtocolError as error:
        raise ReferenceFault(f"the reference child broke off: {error}", transient=True) from None


def _parse_computed(reply: wire.Message, window: float, calls: int, chunk: int, trusted: bool) -> Batch:
    """What a child says it computed. Only the reference's phase times are used (trusted); the
    candidate's signature, addresses and checksums are only ever checked against other facts."""
    h = reply.header
    signature = h.get("signature")
    if not isinstance(signature, list) or not all(_valid_signature(s) for s in signature):
        raise wire.ProtocolError("malformed output signature")
    if len(reply.blob) % 8:
        raise wire.ProtocolError("malformed checksums")
    addresses = h.get("addresses") or []
    if not isinstance(addresses, list) or not all(
            isinstance(a, list) and len(a) == 2 and all(isinstance(v, int) and 0 <= v < 1 << 64 for v in a)
            for a in addresses):
        raise wire.ProtocolError("malformed output addresses")
    import numpy as np
    times = h.get("times") if trusted and _valid_times(h.get("times")) else [0.0, 0.0, 0.0]
    batch = Batch(window_s=window, signature=signature, forward_s=min(times[1], window),
                  credit_s=min(max(window - times[1] - times[2], 0.0), window),
                  checksums=np.frombuffer(reply.blob, dtype="<i8").tolist(), addresses=addresses,
                  invalid=h.get("invalid") if isinstance(h.get("invalid"), str) else None,
                  mismatch=h.get("mismatch") if isinstance(h.get("mismatch"), int) and 0 <= h["mismatch"] < calls else None,
                  input_bytes=int(h.get("input_bytes") or 0) if trusted else 0)
    if trusted and (batch.invalid or batch.mismatch is not None):
        raise wire.ProtocolError("the reference's outputs are not plain tensors of one signature")
    return batch


def _valid_times(times) -> bool:
    return isinstance(times, list) and len(times) == 3 and all(
        isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in times)


def _pid_of(ready: wire.Message) -> int | None:
    pid = ready.header.get("pid")
    return pid if isinstance(pid, int) and 0 < pid < 1 << 22 else None


def _valid_signature(item) -> bool:
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], list) and isinstance(item[1], str)):
        return False
    if not all(isinstance(d, int) and 0 <= d < 1 << 40 for d in item[0]) or len(item[0]) > 16:
        return False
    try:
        dtype_of(item[1])
    except ValueError:
        return False
    return isinstance(item[2], str) and len(item[2]) < 16


def output_bytes(signature: list) -> list[int]:
    return [math.prod(shape) * dtype_of(dtype).itemsize for shape, dtype, _ in signature]


def _chunk_size(out_bytes: list[int], calls: int) -> int:
    chunk = wire.MIN_CHUNK
    while calls * sum(wire.chunk_count(b, chunk) for b in out_bytes) > MAX_CHECKSUMS:
        chunk *= 2
    return chunk


def _checksum_offsets(out_bytes: list[int], chunk: int, calls: int) -> list[list[int]]:
    """offsets[call][output]: where that output's checksums start in the batch's list."""
    per_call = [wire.chunk_count(b, chunk) for b in out_bytes]
    offsets, position = [], 0
    for _ in range(calls):
        row = []
        for count in per_call:
            row.append(position)
            position += count
        offsets.append(row)
    return offsets


def _choose(out_bytes: list[int], chunk: int, calls: int, budget: int) -> list[tuple[int, int, int, int]]:
    """(call, output, start, length) ranges to compare, chosen at random within the budget."""
    units = [(call, output, start, min(chunk, size - start))
             for call in range(calls) for output, size in enumerate(out_bytes)
             for start in range(0, max(size, 1), chunk) if size]
    if sum(u[3] for u in units) > budget or len(units) > MAX_STORE_ITEMS:
        rng = secrets.SystemRandom()
        rng.shuffle(units)
        chosen, total = [], 0
        for unit in units:
            if chosen and (total + unit[3] > budget or len(chosen) >= MAX_STORE_ITEMS):
                break
            chosen.append(unit)
            total += unit[3]
        units = sorted(chosen)
    return units


def _store(child: Child, ranges: list, timeout: float) -> bytes | str:
    """The chosen ranges' bytes, one after the other, written by the child into a memfd the
    parent seals before reading. A string when the child kept a way to change them afterwards."""
    total = sum(r[3] for r in ranges)
    fd = os.memfd_create("kturn-outputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, total)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        items, offset = [], 0
        for call, output, start, length in ranges:
            items.append([call, output, start, length, offset])
            offset += length
        child.request({"type": "store", "items": items}, "stored", timeout, fds=(fd,))
        try:
            seal(fd, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        except OSError:
            return "the child kept its outputs mapped writable after storing them"
        return _read_exactly(fd, 0, total)
    finally:
        os.close(fd)


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    parts, done = [], 0
    while done < length:
        data = os.pread(fd, min(length - done, 16 << 20), offset + done)
        if not data:
            break
        parts.append(data)
        done += len(data)
    return b"".join(parts).ljust(length, b"\0")

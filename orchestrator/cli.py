"""The `kturn` command line (Typer + Rich)."""
from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.problems import BUNDLED_DIR, ProblemError, load_problems
from orchestrator.settings import get_settings

# Registered as the CLI is imported, so it runs after the commands' own exit handlers: the
# interpreter's collections while it shuts down would otherwise walk every object the imports made,
# some 0.3 s of CPU per command here, and kturn needs no cycle finalized then (what it writes is
# closed by `with` blocks; the OS closes the sockets of pooled connections).
atexit.register(gc.freeze)

app = typer.Typer(help="kturn: multi-turn LLM kernel-generation rollouts.", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Piped output gets room for wide tables instead of the 80 columns Rich assumes, unless COLUMNS says.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
errors = Console(stderr=True)

DEMO_ANSWERS = {"cpu": Path(__file__).with_name("data") / "demo_answers.jsonl",
                "cuda": Path(__file__).with_name("data") / "demo_answers_cuda.jsonl"}
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class Backend(str, Enum):
    cuda = "cuda"
    triton = "triton"
    cpp = "cpp"


class Device(str, Enum):
    cuda = "cuda"
    cpu = "cpu"


class CheckOn(str, Enum):
    auto = "auto"
    here = "here"
    workers = "workers"


CHECK_ON_HELP = ("Where pre-flight runs: on this host, or on the evaluate workers as tasks on their queue (a cluster only); "
                 "auto: on the workers when the device is cuda and this host has no CUDA GPU, else here.")


class FirstPrompt(str, Enum):
    kturn = "kturn"
    dataset = "dataset"


class Generator(str, Enum):
    sglang = "sglang"
    openai = "openai"
    replay = "replay"


@app.callback()
def _environment() -> None:
    """Refuse a half-configured environment before any command acts on it."""
    problem = get_settings().half_configured()
    if problem:
        raise fail(problem)


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # messages quote paths and errors: no markup
    return typer.Exit(code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def database_url(migrate_embedded: bool = True) -> str:
    """The database URL, checked to be at the newest schema (the embedded SQLite migrates itself)."""
    from db.migrate import is_current, upgrade

    from sqlalchemy.exc import OperationalError

    settings = get_settings()
    url = settings.sqlalchemy_url
    try:
        if settings.database_url is None and migrate_embedded:
            upgrade(url)
        elif not is_current(url):
            raise fail("the database schema is not current: run `kturn db upgrade` first")
    except OperationalError as error:
        raise fail(f"cannot reach the database ({_redacted(url)}): {error.orig}") from None
    return url


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_backend(backend: Backend, device: Device) -> None:
    if backend is Backend.cuda and device is not Device.cuda:
        raise fail("--backend cuda needs --device cuda")
    if backend is Backend.cpp and device is not Device.cpu:
        raise fail("--backend cpp runs on the CPU: use --device cpu")


# ---------------------------------------------------------------- run and its watchers


@app.command()
def run(
    problems: Annotated[list[Path], typer.Argument(help="KernelBench directories (levelN/ID_Name.py), slime JSONL files, or problem files.")],
    samples: Annotated[int, typer.Option(min=1, help="Trajectories per problem.")] = 1,
    turns: Annotated[int, typer.Option(min=1, help="Turns per trajectory at most.")] = 3,
    backend: Annotated[Backend, typer.Option(help="Kernel language the model is asked for.")] = Backend.cuda,
    device: Annotated[Device, typer.Option(help="Where candidates are evaluated.")] = Device.cuda,
    generator: Annotated[Generator, typer.Option(help="sglang: SGLang's /generate; openai: any OpenAI-compatible server; replay: recorded answers.")] = Generator.sglang,
    url: Annotated[Optional[list[str]], typer.Option(help="Model server URL (repeatable: several servers; or one SGLang router).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (default: what the server serves; given, it must match).")] = None,
    replay: Annotated[Optional[Path], typer.Option(help="JSONL of recorded answers for --generator replay.", exists=True, dir_okay=False)] = None,
    level: Annotated[Optional[list[int]], typer.Option(help="Only these KernelBench levels (repeatable).")] = None,
    ids: Annotated[Optional[list[int]], typer.Option("--id", help="Only these problem ids (repeatable).")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling.")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Top-k sampling.")] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option(help="Default 1.1: the fix for token loops.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Default 8192 (SGLang's own default is 128).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop sequences, replacing the defaults (repeatable).")] = None,
    thinking: Annotated[bool, typer.Option("--thinking/--no-thinking", help="Qwen3 reasoning on or off.")] = False,
    loop_abort: Annotated[bool, typer.Option("--loop-abort/--no-loop-abort", help="Abort a streamed answer once it loops (default on).")] = True,
    record_tokens: Annotated[bool, typer.Option("--record-tokens", help="Store prompt/output token ids and logprobs per turn (table turn_tokens).")] = False,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenize prompts here and send input_ids (HF hub name, directory or tokenizer.json).")] = None,
    stream_interval: Annotated[Optional[int], typer.Option(min=1, help="Output tokens per streamed chunk (default 8).")] = None,
    first_prompt: Annotated[FirstPrompt, typer.Option(help="Turn 0's prompt: kturn's own, or a slime/TritonForge JSONL line's own `prompt` (dataset; kturn's where a problem has none).")] = FirstPrompt.kturn,
    outage_hold: Annotated[Optional[float], typer.Option(min=0, help="Seconds a generation waits out an unreachable model server (refused or dropped connections, 5xx) before its turn fails; the turn is held in its worker, so the queue pauses instead of burning (default 1800; 0: a few quick retries).")] = None,
    gamma: Annotated[Optional[float], typer.Option(help="Discount of the return over turns (default 0.4).")] = None,
    early_stop: Annotated[Optional[float], typer.Option(help="End a trajectory once a turn's reward reaches this (default 1.3).")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=0.1, help=TIMEOUT_HELP)] = None,
    cuda_arch: Annotated[Optional[str], typer.Option(help="TORCH_CUDA_ARCH_LIST of the GPUs, e.g. '9.0' for H100: CUDA answers are then built ahead on CPU build workers (without it, on the GPU host).")] = None,
    memory_limit_mb: Annotated[Optional[int], typer.Option(min=256, help=f"Memory cap of each evaluation child, MB (default: {MEMORY_DEFAULT_HELP}).")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Pre-flight every problem's reference first (as `kturn check`).")] = True,
    check_on: Annotated[CheckOn, typer.Option(help=CHECK_ON_HELP)] = CheckOn.auto,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Run the problems that pass pre-flight and leave out the others (default: refuse the run).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress and return when the run ends.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Start a run: one trajectory per problem and sample, turn 0 of each enqueued for generation."""
    check_backend(backend, device)
    from orchestrator.run_config import RunConfig

    overrides = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty, "max_new_tokens": max_new_tokens, "stop": stop}
    try:
        config = RunConfig(
            generator=generator.value, urls=url or [], replay_path=str(replay.resolve()) if replay else None, enable_thinking=thinking,
            samples=samples, max_turns=turns, first_prompt=first_prompt.value, **({"gamma": gamma} if gamma is not None else {}),
            **({"early_stop_reward": early_stop} if early_stop is not None else {}),
        )
        config.sampling.update({k: v for k, v in overrides.items() if v is not None})
        config.evaluation.update(backend=backend.value, device=device.value, **({"run_timeout_s": timeout} if timeout else {}),
                                 **({"cuda_arch_list": cuda_arch} if cuda_arch else {}))
        config.generation.update(record_tokens=record_tokens, tokenizer=tokenizer, **({"stream_interval": stream_interval} if stream_interval else {}),
                                 **({"outage_hold_s": outage_hold} if outage_hold is not None else {}))
        if not loop_abort:
            config.generation["loop_abort"] = None
        config = RunConfig.model_validate(config.model_dump())
        loaded = load_problems(problems, level or (), ids or ())
    except (ValidationError, ValueError) as error:
        raise fail(_readable(error)) from None
    if check:
        loaded, config = preflight_run(loaded, config, check_on, memory_limit_mb, timeout, skip_bad, quiet=json_output)
    elif memory_limit_mb:
        config.evaluation["memory_limit_mb"] = memory_limit_mb
    try:
        if config.generator == "replay":
            from workers.generation import make_backend

            config.model = model or config.model
            make_backend("replay", replay_path=config.replay_path)  # a malformed file fails here, before the run exists
        else:
            from orchestrator.server_check import check_servers

            config = check_servers(config, model)  # every server up and serving the model, before the run exists
    except (ValidationError, ValueError) as error:
        raise fail(_readable(error)) from None
    start_and_follow(config, loaded, wait, json_output)


def _memory_default_help() -> str:
    from orchestrator.limits import MIN_MEMORY_LIMIT_MB, PEAK_FACTOR, default_memory_limit_mb

    cpu_share = default_memory_limit_mb("cpu")
    return (f"the host's RAM shared by the evaluations it runs at once, two children each (one per GPU on cuda, one per core on cpu: "
            f"{cpu_share} MB here on cpu), at least {MIN_MEMORY_LIMIT_MB} MB, raised to {PEAK_FACTOR:g}x the largest reference's pre-flight peak")


MEMORY_DEFAULT_HELP = _memory_default_help()


def _timeout_help() -> str:
    from orchestrator.limits import SLOWDOWN_FACTOR
    from workers.evaluation import EvalSettings

    default = EvalSettings()
    return (f"Seconds each batch of calls (and each other request) of an evaluation may run (default: {default.run_timeout_s:g}, "
            f"raised to {SLOWDOWN_FACTOR:g}x the longest batch a reference took in pre-flight: {default.timing_batch_ms:g} ms, "
            "or one call where a call takes longer).")


TIMEOUT_HELP = _timeout_help()


def preflight_table(checked) -> "Table":
    from rich.table import Table

    from orchestrator.preflight_checks import HERE

    table = Table(title="pre-flight", title_justify="left")
    table.add_column("problem", overflow="fold", ratio=2)
    table.add_column("ok", no_wrap=True)
    table.add_column("forward ms", justify="right", no_wrap=True)
    table.add_column("peak MB", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=3)
    on_workers = any(c.where != HERE for c in checked)
    if on_workers:
        table.add_column("worker", overflow="fold")
    for c in checked:
        reason = "" if c.check.ok else f"{c.problem.origin}: {c.check.error.splitlines()[0]}" + (" (transient: try again)" if c.check.transient else "")
        table.add_row(c.problem.key, "[green]yes[/]" if c.check.ok else "[bold red]no[/]", "-" if c.check.forward_ms is None else f"{c.check.forward_ms:.3g}",
                      "-" if c.check.peak_memory_mb is None else f"{c.check.peak_memory_mb:,.0f}", reason, *([c.where] if on_workers else []))
    return table


def checks_on_workers(on: CheckOn, device: str) -> bool:
    """Whether pre-flight goes to the evaluate workers; refused where it cannot run where asked."""
    embedded = get_settings().embedded
    no_device_here = device == "cuda" and not _cuda_available()
    if on is CheckOn.auto:
        on = CheckOn.workers if no_device_here and not embedded else CheckOn.here
    if on is CheckOn.workers and embedded:
        raise fail("--check-on workers needs a cluster (DATABASE_URL and REDIS_URL): the embedded default has no workers to ask")
    if on is CheckOn.here and no_device_here:
        raise fail("pre-flight here runs each reference on the chosen device, and torch sees no CUDA GPU on this host: on a cluster, "
                   "the evaluate workers can run it (kturn run --check-on workers, kturn check --on workers); kturn run also takes --no-check")
    return on is CheckOn.workers


def run_checks(loaded, settings, on: CheckOn, memory_limit_mb: int | None, quiet: bool):
    """Pre-flight with a progress bar on stderr, here or on the evaluate workers, under
    `memory_limit_mb` or else the cap the running host gives an evaluation child."""
    from dataclasses import replace

    from orchestrator.limits import default_memory_limit_mb
    from orchestrator.preflight_checks import PreflightUnavailable, check_on_workers, check_problems

    on_workers = checks_on_workers(on, settings.device)
    with Progress(TextColumn("pre-flight"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=errors, disable=quiet) as progress:
        bar = progress.add_task("pre-flight", total=len(loaded))
        advance = lambda _c: progress.advance(bar)  # noqa: E731
        if not on_workers:
            here = replace(settings, memory_limit_mb=memory_limit_mb or default_memory_limit_mb(settings.device))
            return check_problems(loaded, here, get_settings().cache_dir.expanduser(), on_done=advance)
        try:
            return check_on_workers(loaded, replace(settings, memory_limit_mb=memory_limit_mb or settings.memory_limit_mb),
                                    memory_limit_mb is None, database_url(), on_done=advance)
        except PreflightUnavailable as error:
            raise fail(str(error)) from None


def preflight_run(loaded, config, on: CheckOn, memory_limit_mb: int | None, timeout: float | None, skip_bad: bool, quiet: bool):
    """The problems to run and the config to run them with, after pre-flight: refused (exit 2) on a
    problem that cannot run, unless --skip-bad; the memory cap derived from the checking host and
    the peaks, the time limit from the references' forward() times (where not given)."""
    from orchestrator.limits import memory_limit_for, run_timeout_for

    checked = run_checks(loaded, config.evaluation_settings(), on, memory_limit_mb, quiet)
    bad = [c for c in checked if not c.check.ok]
    for c in bad:
        errors.print(f"[bold red]{'skipped' if skip_bad else 'cannot run'}:[/] {c.problem.origin}: {c.check.error.splitlines()[0]}", highlight=False, soft_wrap=True)
    if bad and not skip_bad:
        raise fail(f"{len(bad)} of {len(checked)} problem(s) failed pre-flight (above); fix them, raise --memory-limit-mb or --timeout, "
                   "or pass --skip-bad to run the rest")
    good = [c for c in checked if c.check.ok]
    if not good:
        raise fail("no problem passed pre-flight")
    host_share = min(c.memory_limit_mb for c in good)  # the smallest host's, where workers differ
    config.evaluation["memory_limit_mb"] = memory_limit_mb or memory_limit_for(good, host_share)
    evaluation = config.evaluation
    evaluation["run_timeout_s"] = timeout or run_timeout_for(good, evaluation["run_timeout_s"], evaluation["timing_batch_ms"])
    return [c.problem for c in good], config


def _readable(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors())
    return str(error)


def start_and_follow(config, loaded, wait: bool, json_output: bool) -> None:
    from orchestrator.planning import start_run

    from kombu.exceptions import OperationalError as BrokerError

    url = database_url()
    try:
        run_id = start_run(config, loaded)
    except BrokerError as error:
        raise fail(f"the run was stored but its turns could not be enqueued ({error}); once the broker is back, `kturn reconcile` enqueues them", code=1) from None
    if not json_output:
        console.print(f"run [bold]{run_id}[/]: {len(loaded)} problem(s) × {config.samples} sample(s), up to {config.max_turns} turn(s)")
    follow_and_show(url, run_id, wait, json_output)


def follow_and_show(url: str, run_id: int, wait: bool, json_output: bool) -> None:
    """Follow the run to its end (always in the embedded default, with --wait on a cluster), show
    its turns, and exit 1 when trajectories failed."""
    embedded = get_settings().embedded
    if embedded:
        follow_embedded(url, run_id, quiet=json_output)
    elif wait:
        follow_cluster(url, run_id, quiet=json_output)
    if json_output:
        print_json({"run": run_id, **({"turns": status_rows(url, run_id)} if wait or embedded else {})})
    elif wait or embedded:
        show_status(url, existing_run(url, run_id))
    if (wait or embedded) and existing_run(url, run_id).status == "completed_with_failures":
        raise fail(f"run {run_id}: {failed_line(url, run_id)}; `kturn status {run_id}` shows why, `kturn retry {run_id}` revives them", code=1)


def failed_line(url: str, run_id: int) -> str:
    from db import runs as run_queries
    from db.session import session_scope

    with session_scope(url) as session:
        failed, total = run_queries.failed_counts(session, run_id)
    return f"{failed} of {total} trajectories failed"


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("trajectories"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=errors, disable=quiet)


def follow_embedded(url: str, run_id: int, quiet: bool) -> None:
    from orchestrator import embedded

    with _progress(quiet) as progress:
        bar = progress.add_task("run", total=run_progress(url, run_id)[1])
        embedded.run_until(lambda: run_finished(url, run_id), on_task=lambda: progress.update(bar, completed=run_progress(url, run_id)[0]))
    if not run_finished(url, run_id):
        errors.print(f"run {run_id} stopped before its end (a turn is still claimed, or its message was lost): `kturn reconcile` resumes it", soft_wrap=True)


def follow_cluster(url: str, run_id: int, quiet: bool, poll_s: float = 1.0) -> None:
    with _progress(quiet) as progress:
        bar = progress.add_task("run", total=run_progress(url, run_id)[1])
        while not run_finished(url, run_id):
            progress.update(bar, completed=run_progress(url, run_id)[0])
            time.sleep(poll_s)
        progress.update(bar, completed=run_progress(url, run_id)[0])


def run_progress(url: str, run_id: int) -> tuple[int, int]:
    from db import runs as run_queries
    from db.session import session_scope

    with session_scope(url) as session:
        return run_queries.progress(session, run_id)


def run_finished(url: str, run_id: int) -> bool:
    from db import runs as run_queries
    from db.session import session_scope

    with session_scope(url) as session:
        return run_queries.get(session, run_id).status != "running"


def status_rows(url: str, run_id: int) -> list[dict[str, Any]]:
    from db import runs as run_queries
    from db.session import session_scope
    from orchestrator.status_view import turn_row

    with session_scope(url) as session:
        return [turn_row(*row) for row in run_queries.turn_rows(session, run_id)]


def show_status(url: str, run) -> None:
    from orchestrator.status_view import generation_line, turns_table

    console.print(turns_table(run, status_rows(url, run.id)))
    console.print(generation_line(generation_summary(url, run.id)), highlight=False)


def generation_summary(url: str, run_id: int) -> dict[str, Any]:
    from db import generation as generation_queries
    from db.session import session_scope
    from orchestrator.status_view import generation_summary as summary

    with session_scope(url) as session:
        return summary(generation_queries.cache_figures(session, run_id))


def existing_run(url: str, run_id: int):
    from db import runs as run_queries
    from db.session import session_scope

    with session_scope(url) as session:
        found = run_queries.get(session, run_id)
    if found is None:
        raise fail(f"no run {run_id}")
    return found


@app.command()
def status(run_id: Annotated[int, typer.Argument(metavar="RUN")], json_output: JsonFlag = False) -> None:
    """Per-turn table of a run."""
    url = database_url()
    found = existing_run(url, run_id)
    if json_output:
        print_json({"run": run_id, "status": found.status, "config": found.config, "turns": status_rows(url, run_id),
                    "generation": generation_summary(url, run_id)})
    else:
        show_status(url, found)


@app.command("check")
def check_command(
    problems: Annotated[list[Path], typer.Argument(help="KernelBench directories, slime JSONL files, or problem files.")],
    device: Annotated[Device, typer.Option(help="The device the references run on.")] = Device.cpu,
    on: Annotated[CheckOn, typer.Option(help=CHECK_ON_HELP)] = CheckOn.auto,
    level: Annotated[Optional[list[int]], typer.Option(help="Only these KernelBench levels (repeatable).")] = None,
    ids: Annotated[Optional[list[int]], typer.Option("--id", help="Only these problem ids (repeatable).")] = None,
    memory_limit_mb: Annotated[Optional[int], typer.Option(min=256, help="Memory cap of the reference's process, MB (default: as kturn run's).")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds the reference's first call may run.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Pre-flight: run each problem's reference once in the sandbox (in parallel, cached) and say which can run. Exit 1 if any cannot."""
    from workers.evaluation import EvalSettings

    try:
        loaded = load_problems(problems, level or (), ids or ())
    except ProblemError as error:
        raise fail(str(error)) from None
    settings = EvalSettings(backend="cuda" if device is Device.cuda else "cpp", device=device.value, **({"run_timeout_s": timeout} if timeout else {}))
    checked = run_checks(loaded, settings, on, memory_limit_mb, quiet=json_output)
    if json_output:
        print_json({"memory_limit_mb": min(c.memory_limit_mb for c in checked), "problems": [c.row() for c in checked]})
    else:
        console.print(preflight_table(checked))
    if not all(c.check.ok for c in checked):
        raise typer.Exit(1)


@app.command()
def runs(limit: Annotated[int, typer.Option(min=1)] = 20, json_output: JsonFlag = False) -> None:
    """The newest runs."""
    from db import runs as run_queries
    from db.session import session_scope
    from orchestrator.status_view import run_row, runs_table

    with session_scope(database_url()) as session:
        rows = [run_row(run, counts) for run, counts in run_queries.recent(session, limit)]
    print_json(rows) if json_output else console.print(runs_table(rows))


@app.command()
def retry(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    wait: Annotated[bool, typer.Option("--wait", help="Show progress and return when the run ends.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Revive a run's failed trajectories: a new attempt of each failed turn, from the stage that failed."""
    from orchestrator.revive import retry_failed

    from kombu.exceptions import OperationalError as BrokerError

    url = database_url()
    if existing_run(url, run_id).status == "cancelled":
        raise fail(f"run {run_id} was cancelled: its trajectories stay as they are")
    try:
        revived = retry_failed(run_id)
    except BrokerError as error:
        raise fail(f"the failed turns were revived but could not be enqueued ({error}); once the broker is back, `kturn reconcile` enqueues them", code=1) from None
    if not json_output:
        shown = ", ".join(f"turn {turn_id} to {stage}" for turn_id, stage in revived[:10]) + (", ..." if len(revived) > 10 else "")
        console.print(f"run {run_id}: {len(revived)} failed trajectory(ies) revived" + (f" ({shown})" if revived else ": nothing to retry"), highlight=False, soft_wrap=True)
    if not revived:
        if json_output:
            print_json({"run": run_id, "revived": []})
        return
    if json_output and not (wait or get_settings().embedded):
        print_json({"run": run_id, "revived": [{"turn_id": t, "stage": s} for t, s in revived]})
        return
    follow_and_show(url, run_id, wait, json_output)


@app.command()
def cancel(run_id: Annotated[int, typer.Argument(metavar="RUN")]) -> None:
    """Cancel a run: its open trajectories and turns end as cancelled; queued messages become no-ops."""
    from db import runs as run_queries
    from db.session import session_scope

    url = database_url()
    existing_run(url, run_id)
    with session_scope(url) as session:
        cancelled = run_queries.cancel(session, run_id)
    console.print(f"run {run_id} cancelled ({cancelled} open turn(s))")


@app.command()
def reconcile(
    older_than: Annotated[float, typer.Option(min=0, help="Seconds a waiting turn may go unseen in the broker before it counts as lost.")] = 60.0,
    every: Annotated[Optional[float], typer.Option(min=1, help="Keep reconciling, every this many seconds.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Re-enqueue turns whose lease expired or whose message was lost (a wiped Redis included)."""
    from orchestrator.reconcile_view import reconcile_dict, reconcile_lines
    from orchestrator.reconciler import reconcile as run_reconcile

    from kombu.exceptions import OperationalError as BrokerError

    from sqlalchemy.exc import OperationalError

    database_url()
    while True:
        try:
            report = run_reconcile(older_than)
        except (BrokerError, OperationalError) as error:
            if every is None:
                raise fail(f"cannot reach the broker or the database: {error}", code=1) from None
            errors.print(f"reconcile failed, trying again in {every:g} s: {error}", highlight=False, soft_wrap=True)
        else:
            if json_output:
                print_json(reconcile_dict(report))
            else:
                for line in reconcile_lines(report):
                    console.print(line, highlight=False, soft_wrap=True)
            if get_settings().embedded:
                from orchestrator import embedded

                embedded.run_until(lambda: False)  # the embedded broker lives in this process: run what was re-enqueued
        if every is None:
            return
        time.sleep(every)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Create or migrate the schema to the newest revision."""
    from sqlalchemy.exc import OperationalError

    from db.migrate import upgrade

    url = get_settings().sqlalchemy_url
    try:
        upgrade(url, revision)
    except OperationalError as error:
        raise fail(f"cannot reach the database ({_redacted(url)}): {error.orig}") from None
    console.print(f"database at {revision}")


@app.command()
def demo(device: Annotated[Device, typer.Option(help="cuda: the same run with recorded CUDA answers, evaluated on the GPU.")] = Device.cpu) -> None:
    """A real 3-turn run on the bundled problems with recorded answers (no servers; no GPU unless --device cuda)."""
    from orchestrator.run_config import RunConfig

    if device is Device.cuda and not _cuda_available():
        raise fail("--device cuda needs a CUDA GPU that torch can see (torch.cuda.is_available() is False)")
    config = RunConfig(generator="replay", replay_path=str(DEMO_ANSWERS[device.value]), max_turns=3, early_stop_reward=None)
    config.evaluation.update(backend="cpp" if device is Device.cpu else "cuda", device=device.value)
    start_and_follow(RunConfig.model_validate(config.model_dump()), load_problems([BUNDLED_DIR]), wait=True, json_output=False)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- the stage cores, standalone


@app.command()
def clean(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Raw answers; standard input without FILE.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Clean raw model answers: repetition cut, reasoning split, code extracted. One JSON line per file."""
    from workers.cleaning import clean_response

    sources = [(str(f), _read(f)) for f in files] if files else [("-", sys.stdin.read())]
    for name, text in sources:
        result = clean_response(text)
        row = {"file": name, "degenerate": result.degenerate, "severity": result.severity, "truncated_at": result.truncated_at,
               "cleaned": result.cleaned, "thinking": result.thinking, "code": result.code, "warnings": result.warnings}
        if json_output:
            print_json(row)
        else:
            console.print(f"[bold]{name}[/]: degenerate={result.degenerate} severity={result.severity:.2f} truncated_at={result.truncated_at} code={'yes' if result.code else 'no'}")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"{path}: cannot be read ({error})") from None


@app.command("eval")
def eval_command(
    problem: Annotated[Path, typer.Option(help="The reference program (KernelBench format).")],
    solution: Annotated[Path, typer.Option(help="The candidate defining ModelNew.")],
    device: Annotated[Device, typer.Option()] = Device.cpu,
    backend: Annotated[Optional[Backend], typer.Option(help="The backend the answer was asked for (default: cpp on cpu, cuda on cuda); the evaluation reads the one the code is written in.")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds each correctness and timing phase may run (compilation has its own, longer limit).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Evaluate one solution against its reference in the sandbox. Exit 0 whenever a verdict was produced;
    1 when the reference or the harness failed, so there is no verdict on the solution."""
    from orchestrator.feedback import evaluation_feedback
    from orchestrator.problems import load_file
    from orchestrator.rewards import RewardWeights, verdict_reward
    from workers.evaluation import NOT_THE_CANDIDATES_FAULT, EvalSettings, evaluate

    chosen = backend or (Backend.cpp if device is Device.cpu else Backend.cuda)
    check_backend(chosen, device)
    try:
        reference = load_file(problem)
    except ProblemError as error:
        raise fail(str(error)) from None
    settings = EvalSettings(backend=chosen.value, device=device.value, **({"run_timeout_s": timeout} if timeout else {}))
    verdict = evaluate(reference.source, _read(solution), settings).as_dict()
    if verdict["error_kind"] in NOT_THE_CANDIDATES_FAULT:
        raise fail(f"no verdict on {solution} ({verdict['error_kind']}, not the solution's fault): {problem}: {verdict['error']}", code=1)
    reward = verdict_reward(verdict, RewardWeights())
    out = {
        "compiled": verdict["compiled"], "correct": verdict["correct"],
        "runtime_ms": (verdict["runtime"] or {}).get("median_ms"), "baseline_ms": (verdict["baseline"] or {}).get("median_ms"),
        "speedup": verdict["speedup"], "reward": reward, "flags": verdict["flags"], "error": verdict["error"],
        "feedback": evaluation_feedback(verdict, reward, 2000),
    }
    if json_output:
        print_json(out)
    else:
        for key, value in out.items():
            console.print(f"[bold]{key}[/]: {value}", highlight=False)


@app.command()
def reclean(run_id: Annotated[int, typer.Argument(metavar="RUN")], dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; store nothing.")] = False, json_output: JsonFlag = False) -> None:
    """Re-apply the current cleaner to a run's stored raw answers (never regenerating, never touching them)."""
    from db import turns as turn_queries
    from db.session import session_scope
    from orchestrator.run_config import RunConfig
    from workers.cleaning import clean_response
    from workers.cleaning.tasks import cleaning_columns

    url = database_url()
    run_row = existing_run(url, run_id)
    if run_row.status == "running":
        raise fail(f"run {run_id} is still running: reclean it once it has ended (its later prompts are built from the cleaned answers)")
    config = RunConfig.model_validate(run_row.config)
    changed = []
    with session_scope(url) as session:
        stored = turn_queries.with_raw_response(session, run_id)
        for turn in stored:
            result = clean_response(turn.raw_response, config.cleaning_settings(turn.finish_reason))
            if result.code != turn.code or result.degenerate != turn.degenerate:
                changed.append({"turn_id": turn.id, "turn": turn.turn_index, "code_changed": result.code != turn.code, "degenerate": [turn.degenerate, result.degenerate]})
            if not dry_run:
                turn_queries.update_cleaning(session, turn.id, cleaning_columns(result))
    if json_output:
        print_json({"run": run_id, "turns": len(stored), "changed": changed, "stored": not dry_run})
    else:
        console.print(f"{len(stored)} turn(s) re-cleaned, {len(changed)} changed" + (" (dry run: nothing stored)" if dry_run else ""))
        for row in changed:
            console.print(f"  turn id {row['turn_id']} (turn {row['turn']}): code changed={row['code_changed']}, degenerate {row['degenerate'][0]} → {row['degenerate'][1]}")



# ---------------------------------------------------------------- what a run achieved


def run_report(url: str, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's report and the `turn_metrics` rows it was built from."""
    from dataclasses import asdict

    from db import reports as report_queries
    from db.session import session_scope
    from orchestrator.report import build_report
    from orchestrator.served_by import served_by

    found = existing_run(url, run_id)
    with session_scope(url) as session:
        rows = report_queries.turn_metrics(session, run_id)
    return build_report({"id": run_id, "status": found.status, "served_by": asdict(served_by(found.config))}, rows), rows


@app.command()
def report(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    plot: Annotated[Optional[Path], typer.Option(help="Also render the figure to this PNG file.", dir_okay=False)] = None,
    json_output: JsonFlag = False,
) -> None:
    """Success metrics per turn and overall: lengths, endings, degeneracy, the funnel, rewards, progression."""
    from orchestrator.report_view import report_tables

    if plot is not None and plot.suffix.lower() != ".png":
        raise fail(f"--plot writes a PNG: give a file name ending in .png (got {plot})")
    url = database_url()
    built, rows = run_report(url, run_id)
    if plot is not None:
        from orchestrator.report_plot import render

        try:
            render(built, rows, plot)
        except OSError as error:
            raise fail(f"cannot write {plot}: {error}") from None
    if json_output:
        print_json(built)
    else:
        console.print(report_tables(built))
        if plot is not None:
            console.print(f"figure written to {plot}")


@app.command()
def compare(run_a: Annotated[int, typer.Argument(metavar="RUN_A")], run_b: Annotated[int, typer.Argument(metavar="RUN_B")], json_output: JsonFlag = False) -> None:
    """Two runs side by side: every overall figure of each and the difference."""
    from orchestrator.report import compare as compare_reports
    from orchestrator.report_view import compare_table

    url = database_url()
    comparison = compare_reports(run_report(url, run_a)[0], run_report(url, run_b)[0])
    print_json(comparison) if json_output else console.print(compare_table(comparison))



# ---------------------------------------------------------------- trajectories for trainers


class ExportFormat(str, Enum):
    buffer = "buffer"
    samples = "samples"
    sft = "sft"
    parquet = "parquet"
    tritonforge = "tritonforge"


class Answer(str, Enum):
    cleaned = "cleaned"
    raw = "raw"


class TurnChoice(str, Enum):
    all = "all"
    compiled = "compiled"
    correct = "correct"
    fast_1 = "fast_1"
    fast_2 = "fast_2"


@app.command()
def export(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="buffer, samples (slime), sft (chat JSONL), parquet, tritonforge (multi_turn_logs/).")],
    out: Annotated[Optional[Path], typer.Option(help="File (a directory for tritonforge); default run{RUN}-{format}.jsonl/.parquet in the current directory.")] = None,
    answer: Annotated[Answer, typer.Option(help="The answer text in messages: cleaned (as later prompts show it) or raw.")] = Answer.cleaned,
    turns: Annotated[TurnChoice, typer.Option(help="Which turns the sft format takes.")] = TurnChoice.correct,
    all_groups: Annotated[bool, typer.Option("--all-groups", help="Also export completed trajectories of problems whose other samples did not complete.")] = False,
    push: Annotated[Optional[str], typer.Option(help="Also POST the buffer items to this slime buffer server (/buffer/write).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Export a run for RL trainers and analysis; complete groups (every sample of a problem) only by default."""
    from dataclasses import asdict

    from db.session import session_scope
    from orchestrator.exports import DEFAULT_OUT, ExportRequest, export_run, read_jsonl
    from orchestrator.exports.fields import TOKEN_STATUS
    from orchestrator.exports.push import PushError, push as push_items
    from orchestrator.served_by import served_by

    if push and export_format is not ExportFormat.buffer:
        raise fail("--push sends rollout-buffer items: use it with --format buffer")
    target = out or Path(DEFAULT_OUT[export_format.value].format(run=run_id))
    if not target.resolve().parent.is_dir():
        raise fail(f"{target.parent} is not a directory")
    url = database_url()
    found = existing_run(url, run_id)
    request = ExportRequest(run_id=run_id, format=export_format.value, out=target, served=served_by(found.config), answer=answer.value, turns=turns.value,
                            all_groups=all_groups)
    try:
        with session_scope(url) as session:
            result = export_run(session, request)
    except OSError as error:
        raise fail(f"cannot write {target}: {error}") from None
    summary = asdict(result)
    if push:
        try:
            summary["pushed"] = push_items(read_jsonl(target), push)
        except PushError as error:
            raise fail(f"{error} (all items are in {target})", code=1) from None
    if json_output:
        print_json(summary)
        return
    console.print(f"{result.items} {export_format.value} item(s) from {result.trajectories} trajectories written to {target}" + (f"; {summary['pushed']} pushed to {push}" if push else ""))
    for problem, statuses in result.skipped_groups.items():
        errors.print(f"skipped {problem}: not every sample completed ({', '.join(f'{k} {v}' for k, v in statuses.items())}); --all-groups exports the completed ones", highlight=False, soft_wrap=True)
    without = {status: n for status, n in result.token_ids.items() if status != "complete"}
    if without:
        errors.print(f"{sum(without.values())} of {result.items} samples have no token ids (tokens empty, loss_mask and rollout_log_probs null: "
                     f"a trainer must re-tokenise): " + "; ".join(f"{n}: {TOKEN_STATUS[status]}" for status, n in without.items()), highlight=False, soft_wrap=True)



# ---------------------------------------------------------------- kturn's own counters


@app.command()
def top(
    every: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Runs by status, turns of running runs by state, expired leases, queue depths; refreshed live."""
    from rich.live import Live

    from orchestrator.monitoring import take_snapshot
    from orchestrator.top_view import snapshot_dict, top_tables

    from kombu.exceptions import OperationalError as BrokerError

    database_url()
    try:
        if json_output or once:
            snapshot = take_snapshot()
            print_json(snapshot_dict(snapshot)) if json_output else console.print(top_tables(snapshot))
            return
        with Live(top_tables(take_snapshot()), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(every)
                live.update(top_tables(take_snapshot()))
    except BrokerError as error:
        raise fail(f"cannot reach the broker: {error}", code=1) from None
    except KeyboardInterrupt:
        return


@app.command()
def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the /metrics endpoint.")] = 9808,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
) -> None:
    """Serve kturn's counters for Prometheus (kturn_queue_messages, kturn_open_run_turns, kturn_expired_leases, ...)."""
    from orchestrator.monitoring import serve_metrics

    database_url()
    console.print(f"kturn metrics on http://{address}:{port}/metrics")
    try:
        serve_metrics(port, address)
    except OSError as error:
        raise fail(f"cannot listen on {address}:{port}: {error}") from None
    except KeyboardInterrupt:
        return


if __name__ == "__main__":
    app()

"""The four stages of a turn: their queue, task name, and the states they claim from and to."""
from __future__ import annotations

from dataclasses import dataclass

from db.models import TurnState


@dataclass(frozen=True)
class Stage:
    name: str
    waiting: TurnState
    working: TurnState
    done: TurnState

    @property
    def queue(self) -> str:
        return self.name

    @property
    def task_name(self) -> str:
        return f"kturn.{self.name}"


GENERATE = Stage("generate", TurnState.pending, TurnState.generating, TurnState.generated)
CLEAN = Stage("clean", TurnState.generated, TurnState.cleaning, TurnState.cleaned)
BUILD = Stage("build", TurnState.cleaned, TurnState.building, TurnState.built)
EVALUATE = Stage("evaluate", TurnState.built, TurnState.evaluating, TurnState.done)
STAGES = (GENERATE, CLEAN, BUILD, EVALUATE)
BY_WORKING_STATE = {stage.working.value: stage for stage in STAGES}
BY_WAITING_STATE = {stage.waiting.value: stage for stage in STAGES}
# A problem's pre-flight, asked of the evaluate workers (the run's device is on their hosts), on a
# queue of its own that every evaluate worker also takes (orchestrator/app.py): a new run's
# pre-flight then waits for one evaluation at most, not for a running run's whole backlog.
PREFLIGHT_TASK = "kturn.preflight"
PREFLIGHT_QUEUE = "preflight"

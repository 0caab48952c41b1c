"""What served a run, as its stored `runs.config` says: the model it names, the model and weights the
servers reported before it started (`servers`, from /get_model_info), and the servers (`urls`).
Read leniently, so reports and exports of runs stored by older versions still work. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.run_config import server_urls


@dataclass(frozen=True)
class ServedBy:
    model: str | None = None  # --model, or the served model when none was named
    model_path: str | None = None  # as the servers reported it (they must agree before a run starts)
    weight_version: str | None = None  # at the start of the run; each turn stores the one that answered it
    urls: list[str] = field(default_factory=list)


def served_by(config: dict[str, Any]) -> ServedBy:
    servers = config.get("servers") or [{}]
    return ServedBy(model=config.get("model"), model_path=servers[0].get("model_path"),
                    weight_version=servers[0].get("weight_version"), urls=server_urls(config))


def served_line(served: dict[str, Any]) -> str:
    """One line for people: `Qwen/Qwen3-8B · weights step-3 · http://gpu1:30000, http://gpu2:30000`."""
    parts = [served.get("model") or "?"]
    if served.get("model_path") and served["model_path"] != served.get("model"):
        parts[0] += f" ({served['model_path']})"
    if served.get("weight_version"):
        parts.append(f"weights {served['weight_version']}")
    if served.get("urls"):
        parts.append(", ".join(served["urls"]))
    return " · ".join(parts)

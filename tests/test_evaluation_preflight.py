"""Pre-flight: a problem's reference alone, once, in the sandbox, before any generation is paid for."""
from __future__ import annotations

import pytest

from evaluation_corpus import PROBLEMS
from workers.evaluation import EvalSettings
from workers.evaluation.preflight import preflight

PROBLEM = '''
import torch
import torch.nn as nn
{imports}

class Model(nn.Module):
    def __init__(self):
        super(Model, self).__init__()
{init}
    def forward(self, x):
        return torch.relu(x)

def get_inputs():
    return [torch.randn({size})]

def get_init_inputs():
    return []
'''


def problem(imports: str = "", init: str = "", size: str = "64, 64") -> str:
    return PROBLEM.format(imports=imports, init=init, size=size)


def test_a_problem_that_runs_reports_its_time_and_memory():
    check = preflight((PROBLEMS / "relu.py").read_text(), EvalSettings())
    assert check.ok and check.error is None
    assert check.forward_ms > 0 and check.setup_s > 0
    assert check.input_mb is not None and check.output_mb is not None
    assert check.peak_memory_mb is None or check.peak_memory_mb > 10


@pytest.mark.parametrize("source, reason", [
    (problem(imports="import einops"), "No module named 'einops'"),
    (problem(init="        import socket\n        socket.create_connection(('huggingface.co', 443), timeout=5)\n"),
     "huggingface.co', 443)"),
    (problem() + "\ndef get_init_inputs(:\n", "SyntaxError"),
    (problem().replace("class Model", "class NotTheModel"), "does not define Model"),
])
def test_a_problem_that_cannot_run_says_why_and_is_not_worth_a_retry(source, reason):
    check = preflight(source, EvalSettings())
    assert not check.ok and not check.transient
    assert reason in check.error, check.error


def test_a_problem_that_does_not_fit_the_memory_cap_says_so():
    check = preflight(problem(size="16384, 16384"), EvalSettings(memory_limit_mb=512))  # a 1 GiB input
    assert not check.ok and not check.transient
    assert "512 MB" in check.error or "memory" in check.error.lower(), check.error

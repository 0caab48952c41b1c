from orchestrator.feedback import bounded, cleaning_feedback, evaluation_feedback
from orchestrator.prompts import OMITTED_ATTEMPT, PastTurn, build_messages, first_turn_messages

REFERENCE = "import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return torch.relu(x)\n"


def test_first_turn_holds_problem_and_backend_instructions():
    messages = first_turn_messages(REFERENCE, "cpp")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert REFERENCE.strip() in messages[1]["content"]
    assert "load_inline" in messages[1]["content"] and "CPU" in messages[1]["content"]
    assert "ModelNew" in messages[1]["content"]
    assert "triton.jit" in first_turn_messages(REFERENCE, "triton")[1]["content"]


def test_later_turns_carry_answers_and_feedback_in_order():
    history = [PastTurn("answer zero", "feedback zero"), PastTurn("answer one", "feedback one")]
    messages = build_messages(REFERENCE, "cuda", history, max_chars=100_000)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in messages[2:]] == ["answer zero", "feedback zero", "answer one", "feedback one"]


def test_budget_drops_oldest_answers_first_and_never_the_problem():
    history = [PastTurn("A" * 5000, "fb0"), PastTurn("B" * 5000, "fb1"), PastTurn("C" * 5000, "fb2")]
    base = sum(len(m["content"]) for m in first_turn_messages(REFERENCE, "cuda"))
    messages = build_messages(REFERENCE, "cuda", history, max_chars=base + 11_000)
    contents = [m["content"] for m in messages]
    assert contents[2] == OMITTED_ATTEMPT  # oldest dropped
    assert contents[4] == "B" * 5000 and contents[6] == "C" * 5000
    assert contents[3] == "fb0" and REFERENCE.strip() in contents[1]
    assert sum(map(len, contents)) <= base + 11_000


def test_budget_shortens_the_latest_answer_when_dropping_is_not_enough():
    history = [PastTurn("A" * 5000, "fb0"), PastTurn("B" * 20_000, "fb1")]
    base = sum(len(m["content"]) for m in first_turn_messages(REFERENCE, "cuda"))
    messages = build_messages(REFERENCE, "cuda", history, max_chars=base + 6000)
    assert sum(len(m["content"]) for m in messages) <= base + 6000
    assert messages[4]["content"].startswith("BBB") and "omitted" in messages[4]["content"]
    assert messages[5]["content"] == "fb1"


def test_feedback_for_each_outcome():
    assert "repeating itself" in cleaning_feedback(True, None)
    assert "no code block" in cleaning_feedback(False, "no code block")
    compile_error = evaluation_feedback({"compiled": False, "error_kind": "compile_error", "error": "main.cpp:12: error: 'zero' was not declared"}, 0.0, 2000)
    assert "failed to compile" in compile_error and "'zero' was not declared" in compile_error
    incorrect = evaluation_feedback({"compiled": True, "correct": False, "error_kind": "incorrect", "details": {"check": "values", "trial": 2, "max_abs_diff": 0.5, "max_rel_diff": 0.25}}, 0.1, 2000)
    assert "incorrect" in incorrect and "trial 3" in incorrect and "0.5" in incorrect
    shape = evaluation_feedback({"compiled": True, "correct": False, "details": {"check": "shape", "trial": 0, "expected_shape": [4, 4], "got_shape": [4]}}, 0.1, 2000)
    assert "[4, 4]" in shape and "[4]" in shape
    hacked = evaluation_feedback({"compiled": True, "correct": True, "disqualified": True, "flags": ["torch_fallback"]}, 0.0, 2000)
    assert "not rewarded" in hacked and "try/except" in hacked
    correct = evaluation_feedback({"compiled": True, "correct": True, "runtime": {"median_ms": 1.0}, "baseline": {"median_ms": 2.0}, "speedup": 2.0, "timing_meaningful": True}, 1.4, 2000)
    assert "2.00x" in correct and "faster" in correct


def test_feedback_is_bounded():
    long_error = "error: x\n" * 2000
    text = evaluation_feedback({"compiled": False, "error_kind": "compile_error", "error": long_error}, 0.0, 500)
    assert len(text) < 500 + 300
    assert bounded("abc", 10) == "abc"


def test_a_dataset_prompt_opens_the_conversation_and_later_turns_follow_it():
    first = [{"role": "system", "content": "Triton only."}, {"role": "user", "content": "Make this fast: ..."}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "go"}]
    history = [PastTurn(answer="A" * 5000, feedback="f0"), PastTurn(answer="B" * 5000, feedback="f1")]
    messages = build_messages("unused reference", "triton", history, max_chars=8000, first=first)
    assert messages[:4] == first and [m["role"] for m in messages[4:]] == ["assistant", "user"] * 2
    assert messages[4]["content"] == OMITTED_ATTEMPT and messages[6]["content"] == "B" * 5000  # the oldest answer is dropped, not the prompt

"""ReplayBackend: answers from a JSONL file."""

import json

import pytest

from workers.generation import GenerationError, GenerationRequest, SamplingParams, make_backend


def _request(problem="level1/1_ReLU", turn=0, sample=0):
    return GenerationRequest(rid=f"{problem}-{sample}-{turn}", messages=[{"role": "user", "content": "x"}],
                             sampling=SamplingParams(), problem_key=problem, sample_index=sample, turn_index=turn)


@pytest.fixture
def replay_file(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        {"problem": "level1/1_ReLU", "turn": 0, "text": "any sample, turn 0"},
        {"problem": "level1/1_ReLU", "turn": 0, "sample": 2, "text": "sample 2, turn 0",
         "finish_reason": {"type": "length", "length": 8192}},
        {"problem": "level1/1_ReLU", "turn": 1, "sample": 0, "text": "sample 0, turn 1"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    return path


def test_exact_sample_entry_wins(replay_file):
    result = make_backend("replay", replay_path=str(replay_file)).generate(_request(sample=2))
    assert result.text == "sample 2, turn 0"
    assert result.finish_reason == {"type": "length", "length": 8192}
    assert result.backend == "replay" and result.prompt_text is None


def test_falls_back_to_entry_without_sample_and_default_finish_reason(replay_file):
    result = make_backend("replay", replay_path=str(replay_file)).generate(_request(sample=5))
    assert result.text == "any sample, turn 0"
    assert result.finish_reason == {"type": "stop", "matched": 151645}


def test_missing_entry_names_problem_turn_and_file(replay_file):
    backend = make_backend("replay", replay_path=str(replay_file))
    with pytest.raises(GenerationError, match=r"level1/1_ReLU.*turn 1") as excinfo:
        backend.generate(_request(turn=1, sample=3))
    assert str(replay_file) in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [("{not json", "not valid JSON"), ('{"problem": "p", "turn": "0", "text": ""}', "turn"),
     ('{"problem": "p", "turn": 0}', "text"), ("[1, 2]", "JSON object")],
)
def test_malformed_line_names_file_and_line_number(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "p", "turn": 0, "text": "ok"}\n' + bad_line + "\n")
    with pytest.raises(ValueError, match=message) as excinfo:
        make_backend("replay", replay_path=str(path))
    assert f"{path}:2" in str(excinfo.value)


def test_duplicate_entries_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"problem": "p", "turn": 0, "text": "a"}\n{"problem": "p", "turn": 0, "text": "b"}\n')
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate"):
        make_backend("replay", replay_path=str(path))


def test_file_is_read_once_per_backend(replay_file):
    backend = make_backend("replay", replay_path=str(replay_file))
    replay_file.write_text("")  # later changes do not affect a loaded backend
    assert backend.generate(_request()).text == "any sample, turn 0"


def test_make_backend_checks_its_arguments():
    with pytest.raises(ValueError, match="replay_path"):
        make_backend("replay")
    with pytest.raises(ValueError, match="url"):
        make_backend("sglang")
    with pytest.raises(ValueError, match="replay, sglang"):
        make_backend("vllm")

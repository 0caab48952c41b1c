import json

import pytest

from orchestrator.problems import BUNDLED_DIR, ProblemError, load_problems

GOOD = "import torch\nclass Model(torch.nn.Module):\n    pass\ndef get_inputs():\n    return []\ndef get_init_inputs():\n    return []\n"


def test_bundled_problems_load():
    problems = load_problems([BUNDLED_DIR])
    assert [p.key for p in problems] == ["level1/1_ReLU", "level1/2_Scaled_Add"]
    assert all(p.level == 1 and len(p.source_hash) == 64 for p in problems)


def test_kernelbench_dir_filters_by_level_and_id(tmp_path):
    for level, name in [(1, "1_A.py"), (1, "2_B.py"), (2, "1_C.py")]:
        (tmp_path / f"level{level}").mkdir(exist_ok=True)
        (tmp_path / f"level{level}" / name).write_text(GOOD)
    assert [p.key for p in load_problems([tmp_path])] == ["level1/1_A", "level1/2_B", "level2/1_C"]
    assert [p.key for p in load_problems([tmp_path], levels=[1], ids=[2])] == ["level1/2_B"]
    with pytest.raises(ProblemError, match="no problems left"):
        load_problems([tmp_path], levels=[3])


def test_slime_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": [], "label": GOOD, "extra_info": {"level": 2, "problem_id": 7, "problem_name": "7_Conv"}, "instance_id": "x"}) + "\n")
    [problem] = load_problems([path])
    assert (problem.key, problem.problem_id) == ("level2/7_Conv", 7)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("def broken(:\n", "not valid Python"),
        ("import torch\ndef get_inputs():\n    return []\n", "missing Model, get_init_inputs"),
    ],
)
def test_bad_problem_file_names_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.py"
    path.write_text(content)
    with pytest.raises(ProblemError) as error:
        load_problems([tmp_path / "bad.py"])
    assert str(path) in str(error.value) and reason in str(error.value)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"label": GOOD}) + "\n{not json\n")
    with pytest.raises(ProblemError, match=r"p\.jsonl:2: not valid JSON"):
        load_problems([path])


def test_missing_path(tmp_path):
    with pytest.raises(ProblemError, match="no such file"):
        load_problems([tmp_path / "nope"])


def test_jsonl_extra_info_must_be_an_object(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"label": GOOD, "extra_info": "level 1"}) + "\n")
    with pytest.raises(ProblemError, match=r"p\.jsonl:1: 'extra_info' must be an object"):
        load_problems([path])

import json
from pathlib import Path

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


KERNELBENCH = Path(__file__).parent / "data" / "kernelbench"


def slime_line(path: Path, level: int, problem_id: int, name: str, **extra) -> dict:
    """A line as TritonForge's kernel_bench_*.jsonl files have them: the reference in `label`, ids in `extra_info`."""
    source = (path / f"level{level}" / f"{problem_id}_{name}.py").read_text()
    return {"prompt": [{"role": "user", "content": f"Write a Triton kernel for:\n{source}"}], "label": source, "instance_id": f"level{level}_{problem_id}",
            "extra_info": {"level": level, "problem_id": problem_id, "problem_name": name, **extra}}


def test_the_same_problem_gets_the_same_key_from_the_directory_and_from_the_jsonl(tmp_path):
    from_dir = {p.stable_key: p for p in load_problems([KERNELBENCH], levels=[2])}
    jsonl = tmp_path / "kernel_bench_cuda_level_2.jsonl"
    jsonl.write_text("\n".join(json.dumps(slime_line(KERNELBENCH, 2, i, "Gemm_Scale_BatchNorm")) for i in (33, 39)) + "\n")
    from_jsonl = {p.stable_key: p for p in load_problems([jsonl])}
    assert sorted(from_dir) == sorted(from_jsonl) == ["level2/33", "level2/39"]
    for key in from_dir:
        assert (from_dir[key].key, from_dir[key].source_hash) == (from_jsonl[key].key, from_jsonl[key].source_hash)
    assert from_jsonl["level2/33"].key == "level2/33_Gemm_Scale_BatchNorm" and from_jsonl["level2/33"].instance_id == "level2_33"


def test_two_problems_sharing_a_name_are_told_apart_by_their_ids(tmp_path):
    """KernelBench's level 2 has two Gemm_Scale_BatchNorm (ids 33 and 39): both are problems of their own."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(slime_line(KERNELBENCH, 2, i, "Gemm_Scale_BatchNorm")) for i in (33, 39)) + "\n")
    assert [p.key for p in load_problems([jsonl])] == ["level2/33_Gemm_Scale_BatchNorm", "level2/39_Gemm_Scale_BatchNorm"]


def test_the_same_problem_twice_is_an_error_naming_each_line(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    lines = [slime_line(KERNELBENCH, 2, 33, "Gemm_Scale_BatchNorm"), slime_line(KERNELBENCH, 2, 39, "Gemm_Scale_BatchNorm"),
             slime_line(KERNELBENCH, 2, 33, "Gemm_Scale_BatchNorm")]
    jsonl.write_text("\n".join(map(json.dumps, lines)) + "\n")
    with pytest.raises(ProblemError, match=rf"level2/33 at {jsonl}:1, {jsonl}:3"):
        load_problems([jsonl])
    with pytest.raises(ProblemError, match=rf"at {KERNELBENCH}/level2/33_Gemm_Scale_BatchNorm.py, {jsonl}:1"):
        load_problems([KERNELBENCH / "level2", jsonl])


@pytest.mark.parametrize(("prompt", "expected"), [
    ("Write it in Triton.", [{"role": "user", "content": "Write it in Triton."}]),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]),
    ([], None),
])
def test_the_jsonl_prompt_is_kept_as_chat_messages(tmp_path, prompt, expected):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": prompt, "label": GOOD, "problem_name": "A", "problem_id": 1, "level": 1}) + "\n")
    [problem] = load_problems([jsonl])
    assert problem.prompt == expected and problem.stable_key == "level1/1" and problem.key == "level1/1_A"


def test_a_malformed_prompt_is_named(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": [{"content": 3}], "label": GOOD}) + "\n")
    with pytest.raises(ProblemError, match=r"p\.jsonl:1: 'prompt' must be text or a list"):
        load_problems([jsonl])

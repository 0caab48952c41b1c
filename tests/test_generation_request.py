"""SamplingParams validation and wire format; GenerationResult conveniences."""

import dataclasses

import pytest

from workers.generation import DEFAULT_STOP, FinishReason, GenerationResult, SamplingParams


def test_defaults_go_to_sglang_with_max_new_tokens_stop_and_repetition_penalty():
    params = SamplingParams().to_sglang()
    assert params == {
        "max_new_tokens": 8192,  # SGLang would default to 128
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "min_p": 0.0,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": ["```\n```", "```python\n```python", "\n\n\n\n"],
    }
    assert "sampling_seed" not in params


def test_seed_is_sent_as_sampling_seed():
    assert SamplingParams(seed=7).to_sglang()["sampling_seed"] == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repetition_penalty", 0.0),
        ("repetition_penalty", 2.5),
        ("temperature", 0.0),  # greedy is refused: Qwen3 loops
        ("temperature", -1.0),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("presence_penalty", 2.1),
        ("frequency_penalty", -2.1),
        ("max_new_tokens", 0),
        ("max_new_tokens", 1.5),
        ("min_p", 1.5),
        ("top_k", 0),
        ("top_p", float("nan")),
        ("stop", ("",)),
    ],
)
def test_out_of_range_values_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_edge_values_are_accepted():
    SamplingParams(repetition_penalty=2.0, top_p=1.0, presence_penalty=-2.0, frequency_penalty=2.0,
                   max_new_tokens=1, top_k=-1)


def test_stop_list_or_string_is_stored_as_tuple():
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(stop="END").stop == ("END",)


def test_from_dict_inverts_asdict_including_stop_as_list():
    original = SamplingParams(max_new_tokens=100, seed=3, stop=("x",))
    as_json = {**dataclasses.asdict(original), "stop": ["x"]}  # what a JSON round trip gives back
    assert SamplingParams.from_dict(as_json) == original
    assert SamplingParams.from_dict({}) == SamplingParams()


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams.from_dict({"max_tokens": 5})


def test_default_stop_constant():
    assert SamplingParams().stop == DEFAULT_STOP == ("```\n```", "```python\n```python", "\n\n\n\n")


def _result(finish_reason):
    return GenerationResult(text="", finish_reason=finish_reason, prompt_tokens=None, completion_tokens=None,
                            cached_tokens=None, output_ids=None, latency_s=0.0, backend="replay", prompt_text=None)


def test_result_exposes_finish_type_and_matched_stop():
    stopped = _result({"type": "stop", "matched": "```\n```"})
    assert stopped.finish_type is FinishReason.STOP and stopped.matched_stop == "```\n```"
    assert not stopped.truncated
    truncated = _result({"type": "length", "length": 10})
    assert truncated.truncated and truncated.matched_stop is None

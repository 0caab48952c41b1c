"""OpenAIBackend against SGLangDouble's /v1/chat/completions (SGLang with --reasoning-parser qwen3)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package; works in any import mode
from sglang_double import SGLangDouble, fake_logprob, fake_token_ids  # noqa: E402

from workers.generation import GenerationRequest, GenerationSettings, OpenAIBackend, SamplingParams, make_backend  # noqa: E402
from workers.cleaning import clean_response  # noqa: E402

REASONING = "The op is elementwise, so one thread per element."
ANSWER = "```python\nclass ModelNew(nn.Module):\n    pass\n```"
LOOP = "Let me restate the plan again now. " * 300
SCRIPT = {"think please": [f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"], "answer please": [ANSWER],
          "loop please": [f"<think>\nFirst, the shapes. {LOOP}"]}


def _request(task, thinking=True, **sampling):
    return GenerationRequest(rid="kturn-turn-7", messages=[{"role": "user", "content": task}],
                             sampling=SamplingParams(**sampling), enable_thinking=thinking)


@pytest.fixture
def double():
    with SGLangDouble(SCRIPT, token_rate=4000) as d:
        yield d


def _backend(url, **settings):
    return make_backend("openai", url=url + "/v1", model="Qwen/Qwen3-8B", settings=GenerationSettings(**settings), retries=1)


def test_reasoning_and_answer_come_back_as_qwen3_wrote_them(double):
    result = _backend(double.url).generate(_request("think please"))
    assert result.text == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
    assert result.finish_reason == {"type": "stop", "matched": 151645}
    cleaned = clean_response(result.text)
    assert cleaned.thinking.strip() == REASONING and cleaned.code.startswith("class ModelNew")
    assert result.prompt_tokens > 0 and result.completion_tokens == len(fake_token_ids(result.text)) + 1
    assert result.backend == "openai" and result.server_url == double.url


def test_the_request_carries_the_thinking_switch_sampling_and_rid(double):
    _backend(double.url).generate(_request("answer please", thinking=False, seed=3))
    [body] = double.requests
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["rid"] == "kturn-turn-7"
    assert body["model"] == "Qwen/Qwen3-8B" and body["stream"] is True
    assert (body["max_tokens"], body["repetition_penalty"], body["top_k"], body["seed"]) == (8192, 1.1, 20, 3)
    assert body["stop"] == ["```\n```", "```python\n```python", "\n\n\n\n"] and "logprobs" not in body


def test_a_reasoning_loop_is_aborted_by_rid(double):
    result = _backend(double.url).generate(_request("loop please", stop=[]))
    assert double.aborts == [{"rid": "kturn-turn-7"}] and double.streams[0]["aborted"]
    assert result.finish_reason["type"] == "loop" and result.finish_reason["server"]["type"] == "abort"
    assert result.text.startswith("<think>\nFirst, the shapes. Let me restate") and "</think>" not in result.text
    assert result.loop.onset_char == len("<think>\nFirst, the shapes. ")
    assert result.loop.tokens_after_onset <= 512 and result.completion_tokens == double.streams[0]["tokens_sent"]


def test_length_is_reported_in_sglang_shape(double):
    result = _backend(double.url, loop_abort=None).generate(_request("loop please", stop=[], max_new_tokens=50))
    assert result.finish_reason == {"type": "length", "length": 50} and result.completion_tokens == 50


def test_logprobs_are_kept_when_tokens_are_recorded(double):
    result = _backend(double.url, record_tokens=True).generate(_request("answer please", thinking=False))
    assert double.requests[0]["logprobs"] is True
    assert result.output_logprobs == [fake_logprob(i) for i in fake_token_ids(ANSWER) + [151645]]
    assert result.output_ids is None  # not part of the chat API


def test_base_url_with_or_without_v1():
    assert OpenAIBackend(["http://h:8000/v1/", "http://g:8000"]).urls == ["http://h:8000", "http://g:8000"]

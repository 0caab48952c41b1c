"""Streamed generation against SGLangDouble: loop abort by rid, cancelled requests, token capture."""

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package; works in any import mode
from sglang_double import CHARS_PER_TOKEN, SGLangDouble, fake_logprob, fake_token_ids  # noqa: E402
from tiny_tokenizer import write_tokenizer  # noqa: E402

from workers.generation import (  # noqa: E402
    AbortSignal,
    GenerationRequest,
    GenerationSettings,
    SamplingParams,
    SGLangBackend,
    render_chatml,
)
from workers.generation.abort import CANCELLED  # noqa: E402

INTRO = "I will write a fused kernel for this.\n"
SENTENCE_LOOP = INTRO + "Let me check the grid size once more. " * 400
KERNEL = "```python\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return relu(x)\n```"
SCRIPT = {"loop please": [SENTENCE_LOOP], "kernel please": [KERNEL], "slow please": ["word " * 4000]}


def _request(task, rid="kturn-turn-1", **sampling):
    return GenerationRequest(rid=rid, messages=[{"role": "user", "content": task}], sampling=SamplingParams(**sampling))


def _backend(url, **settings):
    return SGLangBackend(url, settings=GenerationSettings(**settings), retries=2, backoff_s=0.0)


@pytest.fixture
def double():
    with SGLangDouble(SCRIPT, token_rate=4000) as d:
        yield d


def test_a_looping_answer_is_aborted_by_rid_soon_after_its_onset(double):
    result = _backend(double.url).generate(_request("loop please", stop=[]))
    assert double.aborts == [{"rid": "kturn-turn-1"}]
    [stream] = double.streams
    assert stream["aborted"] and stream["tokens_sent"] == result.completion_tokens
    assert stream["tokens_sent"] < len(SENTENCE_LOOP) // CHARS_PER_TOKEN // 4  # far from the whole answer
    loop = result.loop
    assert loop.onset_char == len(INTRO) and loop.period == len("Let me check the grid size once more. ")
    assert loop.onset_char < loop.detected_at_char <= len(result.text)
    assert loop.chars_after_onset == len(result.text) - loop.onset_char
    assert loop.tokens_after_onset <= 512
    # What was decoded is stored: the script's answer up to where the abort took effect.
    assert SENTENCE_LOOP.startswith(result.text) and result.completion_tokens == -(-len(result.text) // CHARS_PER_TOKEN)
    assert result.finish_reason["type"] == "loop" and result.finish_reason["onset"] == len(INTRO)
    assert result.finish_reason["server"]["type"] == "abort"


def test_tokens_after_onset_count_whole_chunks(double):
    result = _backend(double.url, stream_interval=16).generate(_request("loop please", stop=[]))
    onset_tokens = result.completion_tokens - result.loop.tokens_after_onset
    # Counted from the last chunk boundary at or before the onset (a 16-token chunk is 64 characters).
    assert onset_tokens % 16 == 0 and onset_tokens * CHARS_PER_TOKEN <= len(INTRO) < (onset_tokens + 16) * CHARS_PER_TOKEN


def test_a_normal_answer_is_streamed_whole_and_never_aborted(double):
    result = _backend(double.url).generate(_request("kernel please"))
    assert result.text == KERNEL and result.finish_reason == {"type": "stop", "matched": 151645}
    assert result.loop is None and double.aborts == []
    assert double.streams[0]["chunks_sent"] == -(-(len(KERNEL) // CHARS_PER_TOKEN + 1) // 8)  # one chunk per 8 tokens


def test_without_loop_abort_the_loop_runs_to_the_limit(double):
    result = _backend(double.url, loop_abort=None).generate(_request("loop please", stop=[], max_new_tokens=1000))
    assert result.finish_reason == {"type": "length", "length": 1000} and result.loop is None
    assert double.aborts == []


def test_cancelling_aborts_the_running_request():
    with SGLangDouble(SCRIPT, token_rate=200) as slow:
        abort = AbortSignal()
        results = []
        worker = threading.Thread(target=lambda: results.append(_backend(slow.url).generate(_request("slow please", stop=[]), abort)))
        worker.start()
        deadline = time.monotonic() + 10
        while not slow.running and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        abort.abort(CANCELLED)
        worker.join(timeout=10)
        assert not worker.is_alive()
        [result] = results
        assert slow.aborts == [{"rid": "kturn-turn-1"}]
        [stream] = slow.streams
        assert stream["aborted"] and 0 < stream["tokens_sent"] < 1000
        assert result.finish_reason["type"] == "abort" and result.finish_reason["reason"] == "cancelled"
        assert result.completion_tokens == stream["tokens_sent"]


def test_a_request_cancelled_before_it_is_sent_never_reaches_the_server(double):
    abort = AbortSignal()
    abort.abort(CANCELLED)
    result = _backend(double.url).generate(_request("kernel please"), abort)
    assert double.requests == [] and result.text == ""
    assert result.finish_reason == {"type": "abort", "reason": "cancelled", "server": None}


def test_record_tokens_asks_for_logprobs_and_keeps_one_per_output_token(double):
    result = _backend(double.url, record_tokens=True).generate(_request("kernel please"))
    assert double.requests[0]["return_logprob"] is True
    assert result.output_ids == fake_token_ids(KERNEL) + [151645]
    assert result.output_logprobs == [fake_logprob(i) for i in result.output_ids]
    assert result.weight_version == "default" and result.server_url == double.url
    assert result.prompt_token_ids is None  # text mode: the server tokenized the prompt


def test_with_a_tokenizer_the_exact_prompt_ids_are_sent_and_kept(tmp_path):
    request = _request("kernel please")
    prompt = render_chatml(request.messages, enable_thinking=False)
    tokenizer = write_tokenizer(tmp_path / "tokenizer.json", [prompt, KERNEL])
    with SGLangDouble(SCRIPT, tokenizer_path=str(tokenizer)) as double:
        result = _backend(double.url, tokenizer=str(tokenizer), record_tokens=True).generate(request)
        [body] = double.requests
    assert "text" not in body and body["input_ids"] == result.prompt_token_ids
    assert result.prompt_tokens == len(result.prompt_token_ids) and result.text == KERNEL
    assert result.prompt_text == prompt


def test_an_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot load tokenizer '/nonexistent/tokenizer.json'"):
        SGLangBackend("http://127.0.0.1:1", settings=GenerationSettings(tokenizer="/nonexistent/tokenizer.json"))


def test_the_weight_version_of_the_answering_server_is_kept():
    with SGLangDouble(SCRIPT, weight_version="step-42") as double:
        assert _backend(double.url).generate(_request("kernel please")).weight_version == "step-42"

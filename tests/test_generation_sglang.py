"""SGLangBackend against SGLangDouble, a local test double of SGLang's HTTP server."""

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package; works in any import mode
from sglang_double import SGLangDouble  # noqa: E402

from workers.generation import (  # noqa: E402
    AbortSignal,
    GenerationBackend,
    GenerationError,
    GenerationRequest,
    GenerationSettings,
    SamplingParams,
    ServerPool,
    SGLangBackend,
    make_backend,
    render_chatml,
)

KERNEL = "```python\nclass ModelNew(nn.Module):\n    pass\n```"
SCRIPT = {
    "Write ReLU": [KERNEL + "\n```\n```python\nclass ModelNew(nn.Module):\n    pass again\n```"],
    "Write GELU": ["x" * 400],
    "Write tanh": [KERNEL],
}


@pytest.fixture
def double():
    with SGLangDouble(SCRIPT) as d:
        yield d


def _backend(url, **kwargs):
    """Quick retries only, unless a test holds through an outage (settings=...)."""
    return make_backend("sglang", url=url, **{"retries": 3, "backoff_s": 0.0, "settings": GenerationSettings(outage_hold_s=0), **kwargs})


def _request(task="Write ReLU", rid="run1/p1/s0/t0", **sampling):
    return GenerationRequest(rid=rid, messages=[{"role": "system", "content": "You write kernels."},
                                                {"role": "user", "content": task}],
                             sampling=SamplingParams(**sampling), problem_key="level1/19_ReLU")


def test_make_backend_gives_a_generation_backend(double):
    backend = _backend(double.url, model="Qwen/Qwen3-8B")
    assert isinstance(backend, SGLangBackend) and isinstance(backend, GenerationBackend)
    assert backend.name == "sglang" and backend.model == "Qwen/Qwen3-8B"
    assert backend.served_model_path() == "Qwen/Qwen3-8B"


def test_stop_string_cuts_the_text_and_is_named_in_finish_reason(double):
    result = _backend(double.url).generate(_request())
    # The model went on to open a second code block; SGLang cuts where "```\n```" begins.
    assert result.text == "```python\nclass ModelNew(nn.Module):\n    pass\n"
    assert result.finish_reason == {"type": "stop", "matched": "```\n```"}
    assert result.backend == "sglang" and result.latency_s > 0
    assert result.prompt_tokens > 0 and result.completion_tokens == len(result.output_ids) > 0
    assert result.cached_tokens == 0


def test_answer_ending_normally_finishes_on_im_end(double):
    result = _backend(double.url).generate(_request("Write tanh"))
    assert result.text == KERNEL
    assert result.finish_reason == {"type": "stop", "matched": 151645}
    assert result.output_ids[-1] == 151645


def test_length_finish_when_max_new_tokens_is_reached(double):
    result = _backend(double.url).generate(_request("Write GELU", max_new_tokens=10))
    assert result.finish_reason == {"type": "length", "length": 10}
    assert result.truncated and result.completion_tokens == 10
    assert result.text == "x" * 40  # the double's token is 4 characters


def test_server_receives_chatml_prompt_rid_and_full_sampling_params(double):
    request = _request(seed=11)
    result = _backend(double.url).generate(request)
    [body] = double.requests
    assert body["rid"] == "run1/p1/s0/t0" and body["stream"] is True and "return_logprob" not in body
    assert body["text"] == render_chatml(request.messages, enable_thinking=False) == result.prompt_text
    assert body["text"].startswith("<|im_start|>system\nYou write kernels.<|im_end|>\n")
    assert body["text"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    params = body["sampling_params"]
    assert params["max_new_tokens"] == 8192 and params["repetition_penalty"] == 1.1
    assert params["stop"] == ["```\n```", "```python\n```python", "\n\n\n\n"]
    assert (params["temperature"], params["top_p"], params["top_k"], params["sampling_seed"]) == (0.6, 0.95, 20, 11)
    assert params["stream_interval"] == 8


def test_next_turn_hits_the_prefix_cache(double):
    backend = _backend(double.url)
    turn0 = [{"role": "user", "content": "Write tanh"}]
    answer = backend.generate(GenerationRequest(rid="t0", messages=turn0, sampling=SamplingParams())).text
    turn1 = turn0 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "Make it faster."}]
    second = backend.generate(GenerationRequest(rid="t1", messages=turn1, sampling=SamplingParams(), turn_index=1))
    # Reused up to "<|im_start|>assistant\n" of turn 0: the history is rendered the same way each turn.
    shared = len("<|im_start|>user\nWrite tanh<|im_end|>\n<|im_start|>assistant\n")
    assert second.cached_tokens == shared // 4 < second.prompt_tokens


def test_5xx_is_retried_then_succeeds(double):
    double.fail_next = 2
    result = _backend(double.url, retries=3).generate(_request("Write tanh"))
    assert result.text == KERNEL
    assert len(double.requests) == 3  # two 503s, then the answer


def test_5xx_that_persists_becomes_generation_error(double):
    double.fail_next = 10
    with pytest.raises(GenerationError, match=r"unreachable after 2 attempts over 0 s: HTTP 503.*injected"):
        _backend(double.url, retries=2).generate(_request())
    assert len(double.requests) == 2


def test_dead_server_fails_fast_with_clear_message(double):
    url = double.url
    double.stop()  # nothing listens on the port any more
    started = time.monotonic()
    with pytest.raises(GenerationError, match=rf"SGLang server at {url} unreachable after 3 attempts over 0 s: ConnectError"):
        _backend(url, retries=3, backoff_s=0.01).generate(_request())
    assert time.monotonic() - started < 2
    assert _backend(url).served_model_path() is None


def test_restarted_server_is_reached_again(double):
    backend = _backend(double.url)
    double.stop()
    with pytest.raises(GenerationError):
        backend.generate(_request("Write tanh"))
    double.start()
    assert backend.generate(_request("Write tanh")).text == KERNEL


class _ClientWithABug(SGLangBackend):
    """Skips SamplingParams validation, to provoke SGLang's own 400."""

    def _payload(self, request, prompt, prompt_ids):
        payload = super()._payload(request, prompt, prompt_ids)
        payload["sampling_params"]["repetition_penalty"] = 2.5
        return payload


def test_4xx_is_not_retried_and_carries_the_server_message(double):
    backend = _ClientWithABug(double.url, retries=5, backoff_s=0.0)
    with pytest.raises(GenerationError, match=r"HTTP 400.*repetition_penalty must be in \(0, 2\]"):
        backend.generate(_request())
    assert len(double.requests) == 1


def test_read_timeout_is_not_retried():
    with SGLangDouble(SCRIPT, delay_s=0.5) as slow:
        with pytest.raises(GenerationError, match=r"did not answer /generate within 0.1s"):
            _backend(slow.url, timeout_s=0.1, retries=3).generate(_request())
        assert len(slow.requests) == 1


def _events(*chunks):
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [("<html>proxy error</html>", "without a finish_reason"),
     (_events({"text": "x"}), "without text/meta_info"),
     (_events([{"text": "x", "meta_info": {}}]), "streamed an error"),
     (_events({"error": {"message": "out of memory"}}), "streamed an error: .*out of memory"),
     (_events({"text": "x", "meta_info": {"finish_reason": None}}), "without a finish_reason"),
     (_events({"text": "x", "output_ids": [1], "meta_info": {"completion_tokens": 4, "finish_reason": None}}), "incremental chunks")],
)
def test_malformed_stream_is_a_generation_error(body, message):
    pool = ServerPool(retries=1, transport=httpx.MockTransport(lambda _: httpx.Response(200, stream=httpx.ByteStream(body.encode()))))
    backend = SGLangBackend("http://sglang.invalid:30000", pool=pool)
    with pytest.raises(GenerationError, match=rf"sglang.invalid:30000 .*{message}"):
        backend.generate(_request())


@pytest.mark.parametrize("cut", ["", _events({"text": "x", "meta_info": {"finish_reason": None}}).removesuffix("data: [DONE]\n\n"),
                                 'data: {"text": "x", "meta'])
def test_a_stream_cut_before_its_end_is_asked_again(cut):
    """The server went away mid-answer (killed, restarted): the body ends before `data: [DONE]`,
    after the headers only, after some events or inside one. That is a dropped connection, asked
    again, not an answer without a finish."""
    whole = _events({"text": "x", "meta_info": {"finish_reason": {"type": "stop"}, "prompt_tokens": 3, "completion_tokens": 1}})
    bodies = iter([cut, whole])
    pool = ServerPool(retries=2, transport=httpx.MockTransport(lambda _: httpx.Response(200, stream=httpx.ByteStream(next(bodies).encode()))))
    result = SGLangBackend("http://sglang.invalid:30000", pool=pool).generate(_request())
    assert result.text == "x" and next(bodies, None) is None


def test_an_outage_longer_than_the_quick_retries_is_waited_out(double):
    """The server is down for longer than the quick retries last (3 attempts, no backoff): with a hold
    the request waits, trying again every poll, and is answered once the server is back."""
    backend = _backend(double.url, settings=GenerationSettings(outage_hold_s=30, outage_poll_s=0.2))
    double.stop()
    restart = threading.Timer(1.5, double.start)
    restart.start()
    started = time.monotonic()
    try:
        assert backend.generate(_request("Write tanh")).text == KERNEL
    finally:
        restart.join()
    assert 1.5 <= time.monotonic() - started < 10


def test_a_hold_ends_when_it_runs_out_or_when_the_turn_is_aborted(double):
    url = double.url
    double.stop()
    started = time.monotonic()
    with pytest.raises(GenerationError, match=rf"{url} unreachable after \d+ attempts over 1 s: ConnectError"):
        _backend(url, settings=GenerationSettings(outage_hold_s=1, outage_poll_s=0.1)).generate(_request())
    assert 1 <= time.monotonic() - started < 5
    abort = AbortSignal()
    threading.Timer(0.5, abort.abort, args=("cancelled",)).start()
    started = time.monotonic()
    with pytest.raises(GenerationError):
        _backend(url, settings=GenerationSettings(outage_hold_s=600, outage_poll_s=60)).generate(_request(), abort)
    assert time.monotonic() - started < 3  # the cancelled turn's wait ends at once, not at the next poll

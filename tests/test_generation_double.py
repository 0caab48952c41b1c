"""SGLangDouble itself: it must emulate SGLang faithfully, or the client tests prove nothing."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package; works in any import mode
from sglang_double import SGLangDouble, emulate_decoding, validate_sampling_params  # noqa: E402

DOUBLE_SCRIPT = Path(__file__).resolve().parent / "sglang_double.py"


def _decode(continuation, **params):
    return emulate_decoding(continuation, validate_sampling_params(params))


def test_the_stop_that_completes_first_wins_and_text_is_cut_where_it_begins():
    # "23456789" begins earlier but "45" completes first (step 2 vs step 3 of 4-char tokens).
    decoded = _decode("0123456789", stop=["23456789", "45"], max_new_tokens=100)
    assert decoded.finish_reason == {"type": "stop", "matched": "45"}
    assert decoded.text == "0123" and decoded.completion_tokens == 2


def test_stops_completing_in_the_same_step_are_tried_in_list_order():
    decoded = _decode("abcdefgh", stop=["gh", "ef"], max_new_tokens=100)
    assert decoded.finish_reason["matched"] == "gh" and decoded.text == "abcdef"


def test_no_stop_trim_keeps_the_stop_string():
    assert _decode("abcdSTOPxyz", stop="STOP", no_stop_trim=True, max_new_tokens=100).text == "abcdSTOP"


def test_length_wins_over_a_stop_completing_at_the_same_step():
    decoded = _decode("abcdefgh", stop=["gh"], max_new_tokens=2)
    assert decoded.finish_reason == {"type": "length", "length": 2} and decoded.text == "abcdefgh"


def test_without_max_new_tokens_sglang_default_of_128_truncates():
    decoded = _decode("y" * 1000)
    assert decoded.finish_reason == {"type": "length", "length": 128}
    assert len(decoded.text) == 128 * 4


def test_end_of_text_emits_im_end_as_one_more_token():
    decoded = _decode("abcdefghi", max_new_tokens=100)
    assert decoded.finish_reason == {"type": "stop", "matched": 151645}
    assert decoded.text == "abcdefghi" and decoded.completion_tokens == 3 + 1


@pytest.mark.parametrize(
    ("params", "message"),
    [({"repetition_penalty": 2.5}, "repetition_penalty must be in (0, 2]"),
     ({"repetition_penalty": 0}, "repetition_penalty"), ({"max_tokens": 10}, "unexpected keyword"),
     ({"top_p": 0}, "top_p"), ({"temperature": "hot"}, "invalid sampling_params")],
)
def test_invalid_sampling_params_answer_400_with_error_json(params, message):
    with SGLangDouble({"": ["ok"]}) as double:
        response = httpx.post(f"{double.url}/generate", json={"text": "p", "sampling_params": params})
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_batch_answers_in_order_and_checks_rids():
    with SGLangDouble({"first": ["one"], "second": ["two"]}) as double:
        body = {"text": ["the first prompt", "the second prompt"], "rid": ["a", "b"],
                "sampling_params": [{"max_new_tokens": 10}, {"max_new_tokens": 10}]}
        answers = httpx.post(f"{double.url}/generate", json=body).json()
        assert [a["text"] for a in answers] == ["one", "two"]
        assert [a["meta_info"]["id"] for a in answers] == ["a", "b"]
        bad = httpx.post(f"{double.url}/generate", json={**body, "rid": "a"})
        assert bad.status_code == 400 and "rid should be a list" in bad.json()["error"]["message"]


def test_script_answers_by_call_order_longest_key_wins_and_last_answer_repeats():
    with SGLangDouble({"": ["fallback"], "ReLU": ["r1", "r2"]}) as double:
        texts = [httpx.post(f"{double.url}/generate", json={"text": t}).json()["text"]
                 for t in ("ReLU", "other", "ReLU", "ReLU")]
    assert texts == ["r1", "fallback", "r2", "r2"]


def test_unscripted_prompt_fails_loudly():
    with SGLangDouble({"ReLU": ["r1"]}) as double:
        response = httpx.post(f"{double.url}/generate", json={"text": "GELU"})
    assert response.status_code == 400 and "no script entry" in response.json()["error"]["message"]


def test_cached_tokens_follow_the_longest_earlier_prefix():
    with SGLangDouble(lambda prompt: "ANSWER") as double:
        def cached(text):
            return httpx.post(f"{double.url}/generate", json={"text": text}).json()["meta_info"]["cached_tokens"]

        assert cached("A" * 40) == 0
        assert cached("A" * 40 + "ANSWER" + "B" * 40) == (40 + 6) // 4  # earlier prompt + its output
        assert cached("A" * 40) == 9  # all but one prompt token, as SGLang always computes one


def test_service_endpoints_and_recording_over_http():
    with SGLangDouble({"": ["ok"]}) as double:
        assert httpx.get(f"{double.url}/health").status_code == 200
        assert httpx.get(f"{double.url}/get_model_info").json() == {
            "model_path": "Qwen/Qwen3-8B", "tokenizer_path": "Qwen/Qwen3-8B", "is_generation": True,
            "weight_version": "default"}
        assert httpx.post(f"{double.url}/abort_request", json={"rid": "r"}).status_code == 200
        httpx.post(f"{double.url}/_double/fail_next", json={"n": 1})
        assert httpx.post(f"{double.url}/generate", json={"text": "p", "rid": "r1"}).status_code == 503
        assert httpx.post(f"{double.url}/generate", json={"text": "p", "rid": "r2"}).status_code == 200
        assert [b["rid"] for b in httpx.get(f"{double.url}/_double/requests").json()] == ["r1", "r2"]
        assert double.aborts == [{"rid": "r"}]
        httpx.post(f"{double.url}/_double/reset", json={})
        assert double.requests == []


def test_runs_as_a_subprocess_and_exposes_what_it_received(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"ReLU": ["```python\nrelu\n```"]}))
    process = subprocess.Popen([sys.executable, str(DOUBLE_SCRIPT), "--port", "0", "--script", str(script)],
                               stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().split()[-1]  # "listening on http://127.0.0.1:PORT"
        assert process.stdout.readline().strip() == "ready"
        answer = httpx.post(f"{url}/generate", json={"text": "ReLU please", "rid": "x",
                                                      "sampling_params": {"max_new_tokens": 100}}).json()
        assert answer["text"] == "```python\nrelu\n```"
        assert httpx.get(f"{url}/_double/requests").json()[0]["rid"] == "x"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0

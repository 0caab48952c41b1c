"""Several servers behind one pool: stable server per trajectory, failover, backoff, per-server cap,
and the health/identity check a run makes before it starts."""

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package; works in any import mode
from sglang_double import SGLangDouble  # noqa: E402

from workers.generation import GenerationError, GenerationRequest, SamplingParams, ServerPool, SGLangBackend  # noqa: E402
from workers.generation.servers import check_openai_server, check_sglang_server, rank_servers  # noqa: E402

SCRIPT = {"": ["```python\nclass ModelNew: pass\n```"]}


def _request(rid, key=""):
    return GenerationRequest(rid=rid, messages=[{"role": "user", "content": "go"}], sampling=SamplingParams(), affinity_key=key)


def test_ranking_is_stable_and_removing_a_server_moves_only_its_keys():
    urls = [f"http://gpu{i}:30000" for i in range(4)]
    keys = [f"trajectory-{i}" for i in range(2000)]
    first = {k: rank_servers(urls, k)[0] for k in keys}
    assert first == {k: rank_servers(list(reversed(urls)), k)[0] for k in keys}  # order of the list is irrelevant
    assert min(Counter(first.values()).values()) > 400  # spread evenly (500 each on average)
    without = {k: rank_servers(urls[:3], k)[0] for k in keys}
    assert all(without[k] == first[k] for k in keys if first[k] != urls[3])


def test_a_trajectory_stays_on_one_server_and_trajectories_spread():
    with SGLangDouble(SCRIPT) as a, SGLangDouble(SCRIPT) as b:
        backend = SGLangBackend([a.url, b.url], retries=1)
        for turn in range(3):
            for trajectory in range(8):
                backend.generate(_request(f"t{trajectory}-{turn}", key=f"trajectory-{trajectory}"))
        on_a = {r["rid"].split("-")[0] for r in a.requests}
        on_b = {r["rid"].split("-")[0] for r in b.requests}
        assert on_a and on_b and not on_a & on_b  # each trajectory on one server only
        assert len(a.requests) == 3 * len(on_a) and len(b.requests) == 3 * len(on_b)


def test_a_dead_server_fails_over_to_the_next_one():
    with SGLangDouble(SCRIPT) as a, SGLangDouble(SCRIPT) as b:
        backend = SGLangBackend([a.url, b.url], retries=3, backoff_s=0.0)
        key = next(f"k{i}" for i in range(100) if rank_servers(backend.urls, f"k{i}")[0] == a.url)
        a.stop()
        result = backend.generate(_request("r1", key=key))
        assert result.server_url == b.url and len(b.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_overload_answers_are_retried_on_the_same_server(status):
    with SGLangDouble(SCRIPT) as a, SGLangDouble(SCRIPT) as b:
        for double in (a, b):
            double.fail_status, double.fail_next = status, 2
        backend = SGLangBackend([a.url, b.url], retries=3, backoff_s=0.0)
        result = backend.generate(_request("r1", key="trajectory-1"))
        served = a if result.server_url == a.url else b
        assert len(served.requests) == 3 and (a if served is b else b).requests == []


def test_the_pool_caps_requests_in_flight_per_server():
    with SGLangDouble({"": ["word " * 200]}, token_rate=2000) as double:
        pool = ServerPool(max_in_flight_per_server=3, retries=1)
        backend = SGLangBackend(double.url, pool=pool)
        threads = [threading.Thread(target=backend.generate, args=(_request(f"r{i}"),)) for i in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(double.streams) == 9 and double.max_running == 3


def test_server_check_reports_identity_or_says_what_is_wrong():
    with SGLangDouble(SCRIPT, weight_version="v7") as double:
        pool = ServerPool(retries=1)
        info = check_sglang_server(pool, double.url)
        assert (info.model_path, info.weight_version) == ("Qwen/Qwen3-8B", "v7")
        assert check_openai_server(pool, double.url).model_path == "Qwen/Qwen3-8B"
        double.healthy = False
        with pytest.raises(GenerationError, match=rf"server at {double.url} is not ready: /health answered HTTP 503"):
            check_sglang_server(pool, double.url)
        url = double.url
    with pytest.raises(GenerationError, match=rf"server at {url} is unreachable: ConnectError"):
        check_sglang_server(pool, url)

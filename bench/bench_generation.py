"""Generation at scale, against the SGLang test double streaming at a fixed token rate.

    python bench/bench_generation.py loops                  # tokens decoded after loop onset, per loop shape
    python bench/bench_generation.py throughput [-c 64]     # worker vs a bare async client, CPU per token

`loops` streams every looping answer of the cleaning corpus through SGLangBackend (default run
settings: loop abort on, 8 tokens per chunk) and reports where the loop began, how many tokens
the double had sent when the abort took effect, and how many of those came after the onset
(goal: <= 512 for every shape). Stop strings are off (`stop=[]`) to measure the detector alone;
`--with-stops` keeps the default stop strings, which end fence and newline floods first.

`throughput` needs the real Postgres and Redis (as the integration tests do; a database of its
own, Redis db `--redis-db`, default 15). It starts the double, then the same N requests at the
same concurrency C go (1) through a bare httpx.AsyncClient that streams and parses every chunk,
and (2) through a real Celery generate worker (`-P threads -c C`) as one run of N one-turn
trajectories: claims, prompts built from the database, streaming with the loop detector, and the
stores. Output tokens per second of each, the worker's overhead, and the CPU seconds each spent
per streamed token (the worker's whole process: Celery, database, HTTP, JSON, loop detector).
Token counts are the double's (one token = 4 characters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from sglang_double import CHARS_PER_TOKEN, SGLangDouble  # noqa: E402

from workers.cleaning import detect_loop  # noqa: E402
from workers.generation import GenerationRequest, SamplingParams, SGLangBackend  # noqa: E402

CORPUS = ROOT / "tests" / "cleaning_corpus"


# ---------------------------------------------------------------- loops


def looping_cases() -> list[tuple[str, str]]:
    cases = []
    for case in sorted(CORPUS.iterdir()):
        expected = case / "expected.json"
        if expected.is_file():
            facts = json.loads(expected.read_text())
            if facts["degenerate"] or facts["loop_in_reasoning"]:
                cases.append((case.name, (case / "raw.md").read_text(encoding="utf-8")))
    return cases


def bench_loops(token_rate: float, with_stops: bool) -> None:
    cases = looping_cases()
    script = {f"case:{name}": [raw] for name, raw in cases}
    results: dict[str, object] = {}
    with SGLangDouble(script, token_rate=token_rate) as double:
        backend = SGLangBackend(double.url, retries=1)

        def run(name: str) -> None:
            sampling = SamplingParams() if with_stops else SamplingParams(stop=[])
            request = GenerationRequest(rid=name, messages=[{"role": "user", "content": f"case:{name}"}], sampling=sampling)
            results[name] = backend.generate(request)

        threads = [threading.Thread(target=run, args=(name,)) for name, _ in cases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = {s["rid"]: s["tokens_sent"] for s in double.streams}
    print(f"{'loop shape':44s} {'period':>6s} {'onset tok':>9s} {'sent':>5s} {'answer':>6s} {'after onset':>11s}  end")
    worst = 0
    for name, raw in cases:
        result = results[name]
        batch = detect_loop(raw)
        onset_tokens = batch.start // CHARS_PER_TOKEN
        if result.loop is not None:
            after, end = result.loop.tokens_after_onset, "loop abort"
        else:
            after, end = sent[name] - onset_tokens, f"{result.finish_reason['type']} {result.finish_reason.get('matched', '')!r}"
        worst = max(worst, after)
        print(f"{name:44s} {batch.period:6d} {onset_tokens:9d} {sent[name]:5d} {-(-len(raw) // CHARS_PER_TOKEN):6d} {after:11d}  {end}")
    print(f"most tokens after onset: {worst} (goal <= 512); token rate {token_rate:g}/s per stream, 8 tokens per chunk")


# ---------------------------------------------------------------- throughput


def legit_answer(tokens: int) -> str:
    lines = ["```python", "import torch", "class ModelNew(torch.nn.Module):", "    def forward(self, a, b):"]
    i = 0
    while sum(len(line) + 1 for line in lines) < tokens * CHARS_PER_TOKEN - 8:
        lines.append(f"        t{i} = a[{i % 97}] * {i * 31 % 1009} + b[{i * 7 % 89}]  # step {i}")
        i += 1
    return "\n".join(lines) + "\n```"


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bare_client(url: str, prompts: list[str], concurrency: int, sampling: dict) -> int:
    """The baseline: stream every request, parse every chunk, keep the last; C at a time."""
    import httpx

    limit = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as client:
        async def one(i: int, prompt: str) -> None:
            nonlocal tokens
            async with limit:
                body = {"text": prompt, "rid": f"bare-{i}", "stream": True, "sampling_params": sampling}
                async with client.stream("POST", url + "/generate", json=body) as response:
                    last = None
                    async for line in response.aiter_lines():
                        if line.startswith("data:") and line[5:].strip() != "[DONE]":
                            last = json.loads(line[5:])
                    tokens += last["meta_info"]["completion_tokens"]

        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return tokens


def core_client(url: str, prompts: list[str], concurrency: int) -> int:
    """The generation core as the worker runs it (threads sharing one ServerPool), without Celery or
    the database."""
    from concurrent.futures import ThreadPoolExecutor

    from workers.generation import ServerPool

    backend = SGLangBackend(url, pool=ServerPool(max_in_flight_per_server=concurrency))
    content = "x"  # the double answers every prompt alike; the prompt's size is what matters

    def one(i: int) -> int:
        request = GenerationRequest(rid=f"core-{i}", messages=[{"role": "user", "content": prompts[i] + content}], sampling=SamplingParams())
        return backend.generate(request).completion_tokens

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(one, range(len(prompts))))


def bench_throughput(concurrency: int, requests: int, answer_tokens: int, token_rate: float, redis_db: int) -> None:
    import psycopg
    import redis
    from sqlalchemy import create_engine, text

    from cluster import Cluster, wait_for
    from orchestrator.problems import BUNDLED_DIR
    from orchestrator.settings import to_sqlalchemy_url
    from workers.generation import render_chatml

    pg_admin = os.environ.get("KTURN_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = f"{os.environ.get('KTURN_TEST_REDIS_URL', 'redis://127.0.0.1:6379')}/{redis_db}"
    name = f"kturn_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(pg_admin, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    database_url = f"{pg_admin.rpartition('/')[0]}/{name}"
    redis.Redis.from_url(redis_url).flushdb()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="kturn-bench-")), database_url, redis_url, lease_seconds=120)
    engine = create_engine(to_sqlalchemy_url(database_url))
    answer = legit_answer(answer_tokens)
    try:
        url = cluster.start_double({"": [answer]}, "--token-rate", str(token_rate))
        cluster.kturn("db", "upgrade")
        sampling = SamplingParams().to_sglang() | {"stream_interval": 8}
        # The prompts the worker will send: the two bundled problems' first turns.
        from orchestrator.problems import load_problems
        from orchestrator.prompts import first_turn_messages

        prompts = [render_chatml(first_turn_messages(p.source, "cpp"), False) for p in load_problems([BUNDLED_DIR])]
        bare_prompts = [prompts[i % len(prompts)] for i in range(requests)]
        started, cpu0 = time.monotonic(), time.process_time()
        bare_tokens = asyncio.run(bare_client(url, bare_prompts, concurrency, sampling))
        bare_wall, bare_cpu = time.monotonic() - started, time.process_time() - cpu0
        started, cpu0 = time.monotonic(), time.process_time()
        core_tokens = core_client(url, bare_prompts, concurrency)
        core_wall, core_cpu = time.monotonic() - started, time.process_time() - cpu0

        worker = cluster.start_worker("generate", "-P", "threads", "-c", str(concurrency))
        pid = cluster.processes[worker].pid
        cpu_before = process_cpu_s(pid)
        started = time.monotonic()
        run_id = cluster.kturn_json("run", str(BUNDLED_DIR), "--samples", str(requests // 2), "--turns", "1", "--backend", "cpp",
                                    "--device", "cpu", "--url", url)["run"]

        def generated() -> int | None:
            with engine.connect() as connection:
                row = connection.execute(text("""SELECT count(*) FILTER (WHERE t.state = 'generated'), count(*), sum(t.completion_tokens)
                    FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = :run"""), {"run": run_id}).one()
            return row[2] if row[0] == row[1] else None

        worker_tokens = wait_for(generated, 1800, "the run's turns to be generated", interval=0.05)
        worker_cpu = process_cpu_s(pid) - cpu_before
        with engine.connect() as connection:  # on the database's clock
            created, first_request, last_answer = connection.execute(text("""
                SELECT extract(epoch FROM r.created_at),
                       min(extract(epoch FROM t.generated_at) - (t.generation_meta->>'latency_s')::float),
                       max(extract(epoch FROM t.generated_at))
                FROM runs r JOIN trajectories tr ON tr.run_id = r.id JOIN turns t ON t.trajectory_id = tr.id
                WHERE r.id = :run GROUP BY r.created_at"""), {"run": run_id}).one()
        worker_wall, whole_wall = float(last_answer) - float(first_request), float(last_answer) - float(created)
    finally:
        cluster.stop_all()
        engine.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()
    ideal = requests / concurrency * (answer_tokens / token_rate)
    bare_rate, worker_rate, core_rate = bare_tokens / bare_wall, worker_tokens / worker_wall, core_tokens / core_wall
    print(f"{requests} requests of {answer_tokens} tokens, {concurrency} at a time, double at {token_rate:g} tokens/s per stream "
          f"(ideal wall {ideal:.1f} s), 8 tokens per chunk")
    print(f"bare async client : {bare_rate:8.0f} tokens/s  wall {bare_wall:6.1f} s  CPU {bare_cpu * 1e6 / bare_tokens:6.1f} µs/token")
    print(f"generation core   : {core_rate:8.0f} tokens/s  wall {core_wall:6.1f} s  CPU {core_cpu * 1e6 / core_tokens:6.1f} µs/token"
          "  (SGLangBackend in C threads: streaming, SSE, JSON, loop detector)")
    print(f"celery worker     : {worker_rate:8.0f} tokens/s  wall {worker_wall:6.1f} s  CPU {worker_cpu * 1e6 / worker_tokens:6.1f} µs/token"
          f"  (whole worker process; wall from its first request to its last answer; {whole_wall:.1f} s from the run's creation)")
    print(f"worker overhead   : {1 - worker_rate / bare_rate:+.1%} of the bare client's throughput (goal <= 5 %); "
          f"core: {1 - core_rate / bare_rate:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    loops = sub.add_parser("loops")
    loops.add_argument("--token-rate", type=float, default=400.0)
    loops.add_argument("--with-stops", action="store_true")
    throughput = sub.add_parser("throughput")
    throughput.add_argument("-c", "--concurrency", type=int, default=64)
    throughput.add_argument("-n", "--requests", type=int, default=192)
    throughput.add_argument("--answer-tokens", type=int, default=300)
    throughput.add_argument("--token-rate", type=float, default=50.0)
    throughput.add_argument("--redis-db", type=int, default=15)
    args = parser.parse_args()
    if args.what == "loops":
        bench_loops(args.token_rate, args.with_stops)
    else:
        bench_throughput(args.concurrency, args.requests, args.answer_tokens, args.token_rate, args.redis_db)


if __name__ == "__main__":
    main()

# The evaluate role (one worker per GPU) and the build role (CPU only): nvcc for load_inline, and Triton.
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev ccache && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/kturn
COPY . .
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e '.[triton]'
CMD ["celery", "-A", "orchestrator.app", "worker", "-Q", "evaluate", "-n", "evaluate@%h", "-l", "INFO", "-c", "1"]

# The CPU roles: the orchestrator CLI, the clean workers, the reconciler and Flower.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kturn
COPY . .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch \
 && pip install --no-cache-dir -e .
CMD ["celery", "-A", "orchestrator.app", "worker", "-Q", "clean", "-n", "clean@%h", "-l", "INFO", "-c", "4"]

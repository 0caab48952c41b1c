# The generate role: lives next to an SGLang server (see compose.yaml); it only makes HTTP calls,
# many at once (threads pool: 128 streams in flight, one shared connection pool).
FROM python:3.11-slim
WORKDIR /opt/kturn
COPY . .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch \
 && pip install --no-cache-dir -e .
CMD ["celery", "-A", "orchestrator.app", "worker", "-Q", "generate", "-n", "generate@%h", "-l", "INFO", "-P", "threads", "-c", "128"]

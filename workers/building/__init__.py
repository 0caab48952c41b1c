"""The build stage: candidates' extensions compiled on CPU hosts before their turn reaches a GPU
(the core is workers/evaluation/prebuild.py; this package holds only its Celery task)."""

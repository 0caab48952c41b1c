"""What the backends that call model servers share: their servers, settings and connection pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.generation.servers import ServerPool
from workers.generation.settings import GenerationSettings


class ServerBackend:
    name = "server"

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        model: str | None = None,
        settings: GenerationSettings | None = None,
        pool: ServerPool | None = None,
        **pool_options: Any,
    ) -> None:
        self.urls = [self.base_url(u) for u in ([urls] if isinstance(urls, str) else urls)]
        if not self.urls:
            raise ValueError(f"the {self.name} backend needs at least one server URL")
        self.url = self.urls[0]
        self.model = model  # kept for provenance (and sent as `model` where the API wants one)
        self.settings = settings or GenerationSettings()
        # Without a pool of its own choosing, the backend makes one (tests, one-off use); a worker
        # process hands every backend the same one.
        self._owns_pool = pool is None
        self.pool = pool or ServerPool(**pool_options)

    @staticmethod
    def base_url(url: str) -> str:
        return url.rstrip("/")

    def abort_on_server(self, url: str, rid: str) -> bool:
        """SGLang's explicit abort (closing the connection is not a reliable one)."""
        return self.pool.post_quietly(url, "/abort_request", {"rid": rid})

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

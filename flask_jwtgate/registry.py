"""One network client per distinct configuration, kept across settings changes.

Settings are replaced whole when an admin changes them. Keeping the clients (JWKS key sets, introspection answers)
outside the settings means a change of, say, the read-only groups does not throw away what they have cached, which
would turn a provider outage at that moment into refusals. A client is keyed by everything it is made from, so a
changed endpoint, credential or option gets a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

from .settings import ProviderSettings

C = TypeVar("C")


class ClientRegistry(Generic[C]):
    """The clients of one kind for one app: subclasses say what a client is keyed by and how it is made.

    :param clock: handed to every client.

    ::

        registry.client(provider)    # made on first use, the same object afterwards
        registry.retain(providers)   # after a settings change: forget the clients nothing uses any more
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._clients: dict[Hashable, C] = {}
        self._lock = threading.Lock()

    def _identity(self, provider: ProviderSettings) -> Hashable | None:
        """What a client for ``provider`` is made from; ``None`` when the provider needs no client of this kind."""
        raise NotImplementedError

    def _make(self, provider: ProviderSettings) -> C:
        raise NotImplementedError

    def client(self, provider: ProviderSettings) -> C:
        """The client for ``provider`` (made on first use)."""
        identity = self._identity(provider)
        client = self._clients.get(identity)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                client = self._clients[identity] = self._make(provider)
            return client

    def peek(self, provider: ProviderSettings) -> C | None:
        """The client for ``provider`` if one was made (by a request), without making one: for status pages."""
        identity = self._identity(provider)
        return self._clients.get(identity) if identity is not None else None

    def retain(self, providers: Collection[ProviderSettings]) -> None:
        """Forget the clients no provider in ``providers`` uses (after a settings change)."""
        keep = {self._identity(p) for p in providers} - {None}
        with self._lock:
            for identity in set(self._clients) - keep:
                del self._clients[identity]

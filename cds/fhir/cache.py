"""A cache bounded in entries and in bytes, least recently used out first: the per-process caches of what
the service makes from FHIR content (validated models, shared elements, outgoing resources, a call's facts)
are all one of these. Pure code.

A count alone does not bound memory: a resource may carry a text of 400 KB as well as 400 bytes. Each entry
is therefore given a size when it is put, ``json_size`` of the JSON text it was made from (measured once,
from the text the cache key is computed from), and the cache keeps the sum of its entries' sizes under
``max_bytes`` as well as their number under ``max_entries``. An entry larger than an eighth of ``max_bytes``
is not kept at all (it would push out most of the others). A limit of 0 turns the cache off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: bytes of Python objects per JSON member (a key and its value) of what is built from a JSON text, on top
#: of the text's own length: about 500 measured for the R4B models of an Observation (tracemalloc, 2,000
#: distinct resources: 9.4 kB each for 367 bytes of JSON with 19 members)
PER_MEMBER = 512
#: the same for plain dicts and lists (a call's facts and firings: 14.6 kB for 5.4 kB of JSON with 261
#: members, about 35 bytes a member)
PER_MEMBER_PLAIN = 64


#: how ``CDS_CACHE_MAX_BYTES`` is shared between the per-process caches, in percent
SHARES = {"models": 40, "facts": 30, "elements": 15, "suggestions": 15}


def share(total: int, cache: str) -> int:
    """The bytes of ``total`` (``CDS_CACHE_MAX_BYTES``) that ``cache`` (a key of ``SHARES``) may hold."""
    return total * SHARES[cache] // 100


def json_size(text: bytes, per_member: int = PER_MEMBER) -> int:
    """The approximate memory, in bytes, of what is made from the JSON ``text``: its length, and
    ``per_member`` for each ``:`` in it (each member of an object). Linear, one pass in C."""
    return len(text) + per_member * text.count(b":")


class LRU(Generic[K, V]):
    """Thread-safe. ``max_entries`` and ``max_bytes`` are the bounds; ``put`` may be given others (module
    caches whose bounds are settings read when the app is built)."""

    def __init__(self, max_entries: int = 0, max_bytes: int = 0):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: K, value: V, size: int, *, max_entries: int | None = None,
            max_bytes: int | None = None) -> None:
        entries = self.max_entries if max_entries is None else max_entries
        limit = self.max_bytes if max_bytes is None else max_bytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if entries <= 0 or limit <= 0 or size > limit // 8:
                return  # not kept (nor what it replaces)
            self._items[key] = (value, size)
            self.bytes += size
            while len(self._items) > entries or self.bytes > limit:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

"""llama-server's prompt cache, as Ollama ≥ 0.30 runs it: per-slot prefix reuse and the host-RAM
cache.

Since Ollama 0.30 the engine behind a model is llama.cpp's ``llama-server``, and Ollama sends
``"cache_prompt": true`` with every completion (ollama ``llm/llama_server.go``). What that does
(llama.cpp ``tools/server/server-context.cpp``):

* **Slot reuse.** A slot keeps the tokens of its last task (prompt and answer). A new task on
  that slot processes only what follows the longest common prefix (LCP) of the two; at least
  one token is always processed, so a prompt seen whole costs one token.
* **Slot choice** (``get_available_slot``). Among idle slots, the one with the longest LCP is
  taken when its similarity ``LCP ÷ prompt tokens`` exceeds ``--slot-prompt-similarity``
  (default 0.10); otherwise the least recently used idle slot.
* **Host-RAM cache** (``--cache-ram`` MiB, default 8192; Ollama passes no flag for it). When a
  slot is chosen by LRU, or by similarity while keeping less than half of its tokens, its state
  is saved into the cache (``prompt_save``) and the cached state with the longest LCP with the
  new prompt, if longer than the slot's own, is moved into the slot (``prompt_load``: the entry
  leaves the cache). Entries are evicted oldest first once the cache is over its size
  (``server_prompt_cache::update``): a state used again leaves and re-enters at the young end,
  so the order is least recently used.

Tokens here are the simulator's (``Profile.prompt_tokens``: 4 UTF-8 bytes a token), so a common
prefix of ``b`` bytes is ``b // 4`` tokens. A state's size is ``tokens × kv_bytes_per_token``
(the profile's figure; :data:`DEFAULT_KV_BYTES_PER_TOKEN` where it has none).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CACHE_RAM_MIB",
    "DEFAULT_KV_BYTES_PER_TOKEN",
    "SALT_RE",
    "SLOT_PROMPT_SIMILARITY",
    "TOKEN_BYTES",
    "HostCache",
    "Slot",
    "choose_slot",
    "common_prefix_bytes",
    "common_prefix_tokens",
    "tokens_of",
    "unsalted",
]

#: UTF-8 bytes per simulated token (``Profile.prompt_tokens``).
TOKEN_BYTES = 4
#: llama-server's ``--cache-ram`` default, MiB (``common/common.h`` ``cache_ram_mib``).
DEFAULT_CACHE_RAM_MIB = 8192
#: llama-server's ``--slot-prompt-similarity`` default.
SLOT_PROMPT_SIMILARITY = 0.10
#: KV bytes per token when a profile says 0: Llama 3.x 8B at f16 (2 × 32 layers × 8 KV heads ×
#: 128 × 2 bytes = 131072).
DEFAULT_KV_BYTES_PER_TOKEN = 131072


#: The salt tag the kit puts before a prompt (``parallel_kit.workload.prompts.salt_specs``): ``[``,
#: 8 hex digits, ``]`` and a space.
SALT_RE = re.compile(r"\A\[[0-9a-f]{8}\] ")


def unsalted(text: str) -> str:
    """``text`` without a leading salt tag. The simulator draws an answer's length and words
    from this, so a salt changes what the server has seen, not the workload."""
    return SALT_RE.sub("", text, count=1)


def tokens_of(data: bytes) -> int:
    """Simulated tokens in ``data`` (4 bytes a token, rounded up; 0 for nothing)."""
    return -(-len(data) // TOKEN_BYTES)


def common_prefix_bytes(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of ``a`` and ``b`` in bytes (binary search over
    slices: O(n log n) in C, no Python loop over bytes)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def common_prefix_tokens(a: bytes, b: bytes) -> int:
    """Whole simulated tokens the two share at their start."""
    return common_prefix_bytes(a, b) // TOKEN_BYTES


@dataclass(slots=True)
class Slot:
    """One llama-server slot: what its KV cache holds (bytes of prompt and answer), when it was
    last used (a counter), and whether a task holds it."""

    index: int
    content: bytes = b""
    last_used: int = -1
    busy: bool = False


def choose_slot(idle: list[Slot], prompt: bytes,
                similarity: float = SLOT_PROMPT_SIMILARITY) -> tuple[Slot, bool]:
    """llama-server's ``get_available_slot`` over the idle slots (at least one).

    Returns:
        (the slot, whether the host cache is updated: chosen by LRU, or by similarity while
        keeping under half of the slot's tokens).
    """
    n = tokens_of(prompt)
    best: Slot | None = None
    best_lcp = 0
    if n > 0 and similarity > 0:
        for s in idle:
            lcp = common_prefix_tokens(s.content, prompt)
            if lcp > best_lcp:
                best, best_lcp = s, lcp
    if best is not None and best_lcp / n > similarity:
        keep = best_lcp / max(1, tokens_of(best.content))
        return best, keep < 0.5
    return min(idle, key=lambda s: s.last_used), True


class HostCache:
    """The host-RAM prompt cache (see the module docstring).

    Args:
        limit_bytes: the size (``--cache-ram`` MiB × 2²⁰); 0 = no host cache.
        kv_bytes_per_token: bytes of one token's state.

    Counters: ``saves``, ``restores``, ``evictions``; ``bytes`` in use; ``len()`` entries.
    """

    def __init__(self, limit_bytes: int, kv_bytes_per_token: int) -> None:
        self.limit_bytes = max(0, int(limit_bytes))
        self.kv_bytes_per_token = max(1, int(kv_bytes_per_token))
        # Oldest first. Indexed by the first token too: an entry that differs there shares
        # nothing with a prompt, so a lookup reads only its own bucket.
        self._entries: OrderedDict[bytes, int] = OrderedDict()
        self._by_head: dict[bytes, set[bytes]] = {}
        self.bytes = 0
        self.saves = self.restores = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, content: bytes) -> bool:
        return content in self._entries

    def keys(self) -> list[bytes]:
        """The entries, least recently used first."""
        return list(self._entries)

    def size_of(self, content: bytes) -> int:
        return tokens_of(content) * self.kv_bytes_per_token

    def save(self, content: bytes) -> bool:
        """Store a slot's state (``prompt_save``); the same state again becomes the youngest.
        Returns whether it is in the cache afterwards (a state bigger than the cache is not)."""
        if not content or self.limit_bytes <= 0:
            return False
        size = self.size_of(content)
        if size > self.limit_bytes:
            return False
        if content in self._entries:
            self._entries.move_to_end(content)
        else:
            self._entries[content] = size
            self._by_head.setdefault(content[:TOKEN_BYTES], set()).add(content)
            self.bytes += size
            self.saves += 1
        self._evict()
        return content in self._entries

    def take_best(self, prompt: bytes, better_than: int) -> tuple[bytes, int] | None:
        """The entry with the longest common prefix with ``prompt``, when it beats
        ``better_than`` tokens; it leaves the cache (``prompt_load`` moves it into the slot)."""
        best: bytes | None = None
        best_lcp = better_than
        for content in self._by_head.get(prompt[:TOKEN_BYTES], ()):
            lcp = common_prefix_tokens(content, prompt)
            if lcp > best_lcp:
                best, best_lcp = content, lcp
        if best is None:
            return None
        self._remove(best)
        self.restores += 1
        return best, best_lcp

    def _remove(self, content: bytes) -> None:
        self.bytes -= self._entries.pop(content)
        head = content[:TOKEN_BYTES]
        bucket = self._by_head[head]
        bucket.discard(content)
        if not bucket:
            del self._by_head[head]

    def _evict(self) -> None:
        while self.bytes > self.limit_bytes and self._entries:
            self._remove(next(iter(self._entries)))
            self.evictions += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.bytes,
                "limit_bytes": self.limit_bytes, "saves": self.saves,
                "restores": self.restores, "evictions": self.evictions}

"""FakePeerProber: scripted reachability between hosts, for unit tests.

`cut(target)` makes every peer fail to reach `target`; `silent` peers do
not answer at all (their verdict is None). Default: everyone reaches
everyone.
"""

from __future__ import annotations


class FakePeerProber:
    def __init__(self) -> None:
        self.unreachable: set[str] = set()  # targets no peer can reach
        self.silent: set[str] = set()  # peers that do not answer
        self.calls: list[tuple[str, str]] = []  # (via, target)

    def cut(self, target: str) -> None:
        self.unreachable.add(target)

    def heal(self, target: str) -> None:
        self.unreachable.discard(target)

    async def probe(self, via: str, target: str, timeout_s: float) -> bool | None:
        self.calls.append((via, target))
        if via in self.silent or via in self.unreachable:
            return None
        return target not in self.unreachable

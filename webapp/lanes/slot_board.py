"""A supervisor's slots as its lane workers see them, shared in memory between the two.

Byte 0 says whether lanes are waiting for a slot (the supervisor sets it each tick); each lane
worker has a byte of its own that it sets while it waits for its queue with nothing to run. Both
are plain memory writes in an anonymous shared mapping inherited through fork: no Redis round trip
on the hot path. So a lane that has just emptied gives its slot up at once when others wait, and
the supervisor stops workers that were already idle when the crowd arrived.
"""

from __future__ import annotations

import mmap

CROWDED = 0


class SlotBoard:
    """One byte for 'lanes wait for a slot', then one byte per lane worker slot."""

    def __init__(self, slots: int):
        self.memory = mmap.mmap(-1, 1 + max(1, slots))
        self.free = list(range(1, 1 + slots))

    def take_slot(self) -> int:
        slot = self.free.pop(0)
        self.memory[slot] = 0
        return slot

    def give_back(self, slot: int) -> None:
        self.memory[slot] = 0
        self.free.append(slot)

    def set_crowded(self, crowded: bool) -> None:
        self.memory[CROWDED] = 1 if crowded else 0

    def is_idle(self, slot: int) -> bool:
        return self.memory[slot] == 1

    def view(self, slot: int) -> SlotView:
        return SlotView(self.memory, slot)


class SlotView:
    """What one lane worker sees and says of the board."""

    def __init__(self, memory: mmap.mmap, slot: int):
        self.memory, self.slot = memory, slot

    def crowded(self) -> bool:
        return self.memory[CROWDED] == 1

    def idle(self, idle: bool) -> None:
        self.memory[self.slot] = 1 if idle else 0


class NoBoard:
    """A lane worker run without a supervisor (tests, ``run_request``): never crowded."""

    def crowded(self) -> bool:
        return False

    def idle(self, idle: bool) -> None:
        pass

"""The event bus seam: publish batches to topics, consume them as a group member, ack."""

from cdb.bus.base import Batch, Bus, Subscription
from cdb.bus.memory import MemoryBus

__all__ = ["Batch", "Bus", "MemoryBus", "Subscription"]

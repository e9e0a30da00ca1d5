"""Frozen model backends."""

from miner.models._backend import Backend, Batch, pick_device, pick_dtype
from miner.models._load import load_backend

__all__ = ["Backend", "Batch", "load_backend", "pick_device", "pick_dtype"]

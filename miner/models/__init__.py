"""Frozen model backends."""

from miner.models._backend import Backend, Batch, cpu_has_native_bf16, pick_device, pick_dtype
from miner.models._load import load_backend

__all__ = ["Backend", "Batch", "cpu_has_native_bf16", "load_backend", "pick_device", "pick_dtype"]

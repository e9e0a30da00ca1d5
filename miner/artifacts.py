"""Content-addressed storage for tensors that do not belong in a database row.

A soft prompt's leaderboard row holds a reference (``soft:<hash>``); the tensor lives in
a safetensors file under the artifact directory. For a SQLite leaderboard the directory
sits beside the database file (``miner.db`` -> ``miner.db.artifacts/``); for other
databases it is set in the config (``artifacts:``), e.g. a shared filesystem path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from miner.errors import MinerError

PREFIX = "soft:"


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put_tensor(self, tensor: torch.Tensor, meta: dict[str, Any] | None = None) -> str:
        from safetensors.torch import save_file

        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.sha256(t.numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()[:16]
        ref = PREFIX + digest
        path = self.path(ref)
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=self.root)
            os.close(fd)
            try:
                save_file({"soft_prompt": t}, tmp, metadata={"miner": json.dumps(meta or {}, default=str)})
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        return ref

    def path(self, ref: str) -> Path:
        if not ref.startswith(PREFIX) or not ref[len(PREFIX) :].isalnum():
            raise MinerError(f"invalid soft-prompt reference {ref!r}")
        return self.root / f"{ref[len(PREFIX) :]}.safetensors"

    def get_tensor(self, ref: str) -> torch.Tensor:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path(ref)
        if not path.is_file():
            raise MinerError(f"soft prompt {ref!r} is not in the artifact store {str(self.root)!r}")
        try:
            tensor = load_file(str(path))["soft_prompt"]
        except (SafetensorError, KeyError, OSError) as exc:
            raise MinerError(
                f"soft prompt {ref!r}: {path} is not a readable soft-prompt tensor "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        if tensor.dim() != 2:
            raise MinerError(
                f"soft prompt {ref!r}: {path} holds a tensor of shape {tuple(tensor.shape)}, not [tokens, hidden]"
            )
        return tensor

    def get_meta(self, ref: str) -> dict[str, Any]:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path(ref)), framework="pt") as f:
                return json.loads((f.metadata() or {}).get("miner", "{}"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise MinerError(f"soft prompt {ref!r}: unreadable metadata ({type(exc).__name__})") from None


def artifacts_for_storage(url: str, override: str | None = None) -> ArtifactStore:
    if override:
        return ArtifactStore(override)
    path = (
        url.removeprefix("sqlite:///")
        if url.startswith("sqlite:///")
        else (url if "://" not in url else None)
    )
    if path and path != ":memory:":
        return ArtifactStore(Path(path).with_name(Path(path).name + ".artifacts"))
    return ArtifactStore("miner-artifacts")

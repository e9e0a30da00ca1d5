"""The frozen model backend: a transformers model and its tokenizer, no global state.

A :class:`Backend` is passed around explicitly. It knows whether the model is a causal
or masked LM, pads batches the right way for each (left padding with explicit position
ids for causal LMs, so that batched scores equal one-at-a-time scores), and exposes the
input embedding matrix and an ``inputs_embeds`` path for gradient and soft-prompt work.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

ModelKind = Literal["causal", "masked"]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor | None  # [B, T] (causal only)
    lengths: list[int]


_DEVICE_FORM = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")


def _devices_here() -> str:
    """This machine's devices, for error messages: "cpu", "cpu, cuda:0", "cpu, cuda:0..3, mps"."""
    found = ["cpu"]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        found.append("cuda:0" if n == 1 else f"cuda:0..{n - 1}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return ", ".join(found)


def pick_device(preference: str = "auto") -> torch.device:
    """The torch device for ``model.device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``. Another form, or a device this machine lacks, is a one-line :class:`ConfigError`
    naming the devices there are."""
    from miner.errors import ConfigError

    m = _DEVICE_FORM.fullmatch(preference) if isinstance(preference, str) else None
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ConfigError(f"model.device {preference!r} is not one of auto, cpu, cuda, cuda:N or mps")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        ok = n > 0 and (index is None or int(index) < n)
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        ok = mps is not None and mps.is_available()
    else:
        ok = True
    if not ok:
        raise ConfigError(f"model.device {preference!r} is not available: this machine has {_devices_here()}")
    return torch.device(preference)


def pick_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    if preference != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[preference]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


_NATIVE_BF16: bool | None = None
_COPY_LOCK = threading.Lock()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16; read once).

    With them a transformer's linear layers run several times faster in bfloat16 than in
    float32 (4.6x for a 576 x 1536 layer on the build machine's AMD EPYC, one thread); without
    them bfloat16 is emulated and slower. Read from the CPU's flags, not timed, so the choice it
    drives is the same on every run of the same machine.
    """
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        flags: set[str] = set()
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except OSError:  # not Linux: keep float32
            pass
        _NATIVE_BF16 = bool(flags & {"avx512_bf16", "amx_bf16"})
        logger.debug("native bfloat16 on this CPU: %s", _NATIVE_BF16)
    return _NATIVE_BF16


# The positions a masked LM's head is to compute in this thread's current forward pass (Backend.forward's
# ``positions``): a thread-local, since a Dask worker's threads may share one model.
_HEAD_ROWS = threading.local()


def _head_input(module, args):
    x = args[0]
    want = getattr(_HEAD_ROWS, "want", None)
    if want is not None and x.dim() == 3 and tuple(x.shape[:2]) == want["shape"]:
        x = x[want["rows"], want["cols"]]  # [B, K, H]: the decoder then computes B x K logits, not B x T
        want["applied"] = True
    return None if x is args[0] and x.is_contiguous() else (x.contiguous(),) + tuple(args[1:])


def _contiguous_head_input(model) -> None:
    """Hook the LM head's input (once per model): make it contiguous, and keep only the positions a
    masked LM's caller reads.

    With ``logits_to_keep`` transformers feeds the head a strided slice
    ``hidden[:, -k:, :]``; on CPU (torch 2.13) ``F.linear`` on that slice takes a batched-matmul
    path about 17x slower than on a contiguous copy (SmolLM2's 49k-word head, 88 rows: 1.11 s
    vs 0.06 s), which made the head, not the transformer, most of a short-row forward pass.
    Masked LMs have no ``logits_to_keep``: their head computes a vocabulary's logits at every
    position although the scorer reads only the masks (8 rows of 64 tokens, a 2-layer model with a
    49k-word head: 0.14 s with every position, 0.005 s for the encoder alone).
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_miner_contiguous", False):
        head.register_forward_pre_hook(_head_input)
        head._miner_contiguous = True


class Backend:
    """A frozen causal or masked LM with its tokenizer."""

    def __init__(self, model, tokenizer, kind: ModelKind, name: str, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.kind: ModelKind = kind
        self.name = name
        model.requires_grad_(False)
        model.eval()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        n_pos = getattr(model.config, "max_position_embeddings", None) or 2048
        # RoBERTa-style models reserve position slots for padding; stay clear of the edge.
        self.max_length = int(max_length or min(n_pos - 2 if kind == "masked" else n_pos, 1024))
        self.pad_id = self._pad_id()
        self.mask_id = tokenizer.mask_token_id if kind == "masked" else None
        if kind == "masked" and self.mask_id is None:
            from miner.errors import ModelLoadError

            raise ModelLoadError(f"model {name!r} is a masked LM but its tokenizer has no mask token")
        self.lead_ids, self.trail_ids = self._special_wrapping()
        self._tokenize = lru_cache(maxsize=200_000)(self._tokenize_uncached)
        _contiguous_head_input(model)

    # ----------------------------------------------------------------- tokenizer
    def _pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0

    def _special_wrapping(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Special tokens the tokenizer puts before and after a text (BOS, [CLS]/[SEP])."""
        probe = "hello world"
        plain = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                lead, trail = tuple(full[:start]), tuple(full[start + len(plain) :])
                break
        else:  # pragma: no cover - exotic tokenizer
            lead, trail = (), ()
        # A causal LM must not see EOS after the prompt: it would predict after the end.
        if self.kind == "causal":
            trail = ()
        return lead, trail

    def _tokenize_uncached(self, text: str) -> tuple[int, ...]:
        if not text:
            return ()
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without special tokens (memoised)."""
        return self._tokenize(text)

    def tokenize_many(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """``[tokenize(t) for t in texts]`` in one batched tokenizer call (not memoised: for whole
        vocabularies, where one call per text costs seconds)."""
        texts = list(texts)
        if not texts:
            return []
        fast = getattr(self.tokenizer, "backend_tokenizer", None)  # a fast tokenizer's Rust side
        if fast is not None:
            ids = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
        else:
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [tuple(x) if t else () for t, x in zip(texts, ids)]

    def clear_caches(self) -> None:
        """Forget the memoised tokenizations and the model copies made by ``as_dtype`` (benchmarks that
        time a cold start, or pay for their own copy, call this between runs)."""
        self._tokenize.cache_clear()
        with _COPY_LOCK:
            self.__dict__.pop("_dtype_copies", None)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ----------------------------------------------------------------- model
    def input_embeddings(self) -> torch.Tensor:
        """The input embedding matrix ``[vocab, hidden]`` (frozen)."""
        return self.model.get_input_embeddings().weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def pad(self, seqs: Sequence[Sequence[int]]) -> Batch:
        """Pad token sequences: left for causal LMs (with position ids), right for masked LMs."""
        lengths = [len(s) for s in seqs]
        width = max(lengths)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if self.kind == "causal":
                ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[r, width - len(s) :] = 1
            else:
                ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, : len(s)] = 1
        pos = None
        if self.kind == "causal":
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return Batch(
            ids.to(self.device), mask.to(self.device), None if pos is None else pos.to(self.device), lengths
        )

    def forward(
        self,
        batch: Batch,
        *,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        positions: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T', V]``; ``logits_to_keep`` > 0 keeps only the last positions (causal).

        ``positions`` (masked LMs): the positions of each row whose logits are wanted; the result is
        then ``[B, K, V]`` (K the most positions of a row; row i's first ``len(positions[i])`` entries
        are its positions in order, the rest repeat position 0), and the head computes only those."""
        if positions is not None:
            if self.kind != "masked":
                raise ValueError("positions= is for masked LMs; causal LMs keep the last positions")
            return self._forward_at(batch, inputs_embeds, positions)
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = batch.input_ids
        if self.kind == "causal":
            kwargs["position_ids"] = batch.position_ids
            kwargs["use_cache"] = False
            if logits_to_keep:
                kwargs["logits_to_keep"] = logits_to_keep
        out = self.model(**kwargs)
        return out.logits

    def _forward_at(
        self, batch: Batch, inputs_embeds: torch.Tensor | None, positions: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        n_rows, width = batch.attention_mask.shape
        k = max((len(p) for p in positions), default=0) or 1
        cols = torch.tensor([list(p) + [0] * (k - len(p)) for p in positions], dtype=torch.long)
        cols = cols.to(batch.attention_mask.device)
        rows = torch.arange(n_rows, device=cols.device)[:, None].expand(n_rows, k)
        want = {"shape": (n_rows, width), "rows": rows, "cols": cols, "applied": False}
        _HEAD_ROWS.want = want
        try:
            logits = self.forward(batch, inputs_embeds=inputs_embeds)
        finally:
            _HEAD_ROWS.want = None
        if not want["applied"]:  # a head the hook could not see into: read the positions afterwards
            logits = logits[rows, cols]
        return logits

    def forward_cached(
        self,
        input_ids,
        attention_mask,
        position_ids,
        *,
        past=None,
        logits_to_keep: int = 1,
        inputs_embeds: torch.Tensor | None = None,
    ):
        """Causal LM pass that continues ``past`` and returns its key/value cache.

        ``past`` and the returned cache are per-layer ``(keys, values)`` lists, each
        ``[B, kv_heads, T, head_dim]``; ``attention_mask`` covers the past and the new tokens.
        Returns ``(logits [B, logits_to_keep, V], layers)``.
        """
        from transformers import DynamicCache

        kv = DynamicCache()
        for li, (k, v) in enumerate(past or ()):
            kv.update(k, v, li)
        inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        out = self.model(
            **inputs,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **{self._cache_kwarg(): kv},
        )
        cache = out.get("cache") if "cache" in out else out.get("past_key_values")
        return out.logits, [(layer.keys, layer.values) for layer in cache.layers]

    def _cache_kwarg(self) -> str:
        # transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept both.
        name = getattr(self, "_cache_kw", None)
        if name is None:
            import inspect

            params = inspect.signature(self.model.forward).parameters
            name = self._cache_kw = "cache" if "cache" in params else "past_key_values"
        return name

    # ----------------------------------------------------------------- generation
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
        chat: bool = True,
        system: str | None = None,
        batch_size: int = 8,
        charge: Callable[[int, int, int], AbstractContextManager[Any]] | None = None,
    ) -> list[str]:
        """Sampled continuations of ``prompts`` (causal LMs), with transformers' ``generate``.

        Each prompt is wrapped in the tokenizer's chat template when it has one and ``chat`` is true
        (a user turn, plus ``system`` when given). Batches are left-padded; sampling is seeded with
        ``seed`` on a forked RNG, so the same call gives the same texts and the global RNG is left as it
        was. ``charge`` is entered around every model call that ``generate`` makes (the cost counter's
        ``forward(sequences, tokens, padded_tokens)``): one pass per generated step of a batch, the first
        of which reads the prompt, so generation is charged, and refused by a budget guard, like scoring.
        Returns the new text of each prompt, special tokens dropped.
        """
        from transformers import GenerationConfig

        from miner.errors import ConfigError

        if self.kind != "causal":
            raise ConfigError(f"model {self.name!r} is a masked LM: it cannot generate text")
        if not prompts:
            return []
        tok = self.tokenizer
        room = max(1, self.max_length - max_new_tokens)
        seqs = [self._generation_ids(p, chat, system)[-room:] for p in prompts]
        eos = [i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int)]
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            top_k=None,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(set(eos)) or None,
        )
        handles = self._charge_hooks(charge) if charge is not None else []
        out: list[str] = []
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed)
                for start in range(0, len(seqs), max(1, batch_size)):
                    chunk = seqs[start : start + max(1, batch_size)]
                    batch = self.pad(chunk)
                    gen = self.model.generate(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=cfg
                    )
                    width = batch.input_ids.shape[1]
                    out.extend(
                        tok.decode(row[width:].tolist(), skip_special_tokens=True).strip() for row in gen
                    )
        finally:
            for h in handles:
                h.remove()
        return out

    def _generation_ids(self, prompt: str, chat: bool, system: str | None) -> tuple[int, ...]:
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
            turns = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
            return tuple(tok(text, add_special_tokens=False)["input_ids"])
        return self.lead_ids + self.tokenize(prompt)

    def _charge_hooks(self, charge: Callable[[int, int, int], AbstractContextManager[Any]]) -> list[Any]:
        """Forward hooks that enter ``charge`` before each model call and leave it after."""
        open_: list[AbstractContextManager[Any]] = []

        def before(module, args, kwargs):
            ids = kwargs.get("input_ids")
            ids = ids if ids is not None else args[0]
            mask = kwargs.get("attention_mask")
            b, t = ids.shape
            real = int(mask[:, -t:].sum()) if mask is not None else b * t
            cm = charge(b, real, b * t)
            cm.__enter__()  # the budget guard may refuse the pass here, before it runs
            open_.append(cm)

        def after(module, args, kwargs, output):
            if open_:
                open_.pop().__exit__(None, None, None)

        return [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True, always_call=True),
        ]

    def as_dtype(self, dtype: torch.dtype) -> Backend:
        """This backend with its model in ``dtype``: itself if already so, else a copy made once
        and kept (searchers screen candidates on it; scores on the leaderboard stay in the model's
        own dtype)."""
        if dtype == self.dtype:
            return self
        with _COPY_LOCK:  # threads sharing a backend (Dask) make one copy, not one each
            copies = self.__dict__.setdefault("_dtype_copies", {})
            if dtype not in copies:
                import copy

                model = copy.deepcopy(self.model).to(dtype)
                copies[dtype] = Backend(model, self.tokenizer, self.kind, self.name, self.max_length)
            return copies[dtype]

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, kind={self.kind}, device={self.device}, dtype={self.dtype})"

"""Tiny models built in memory from a config, with the default model's real tokenizer.

Used by the unit tests and the conformance suite: two layers, random weights, a few
seconds to build, but real tokenization (SmolLM2's BPE tokenizer, shipped in
``assets/smollm2_tokenizer`` so that no test converts the default model to get it; the
masked LM gets the same tokenizer plus a ``<mask>`` token, as RoBERTa-style BPE masked LMs have).
Building one sets torch to a single intra-op thread for the process (see ``_one_thread``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import torch

from miner.models import Backend

TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "smollm2_tokenizer"


def _one_thread() -> None:
    # A tiny model's ops are too small to split: a second intra-op thread only spins. Measured on the
    # 2-core machine (tests/test_scoring.py, load ~13): 12 s CPU with one thread, 75 s with two; under
    # pytest -n 2 each worker would otherwise run as many threads as there are cores.
    torch.set_num_threads(1)


@lru_cache(maxsize=1)
def default_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (the same files the default model's conversion writes)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@lru_cache(maxsize=1)
def masked_tokenizer():
    tok = copy.deepcopy(default_tokenizer())
    tok.add_special_tokens({"mask_token": "<mask>"})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_causal(seed: int = 0, hidden: int = 64, layers: int = 2) -> Backend:
    from transformers import LlamaConfig, LlamaForCausalLM

    _one_thread()
    tok = default_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    return Backend(model, tok, "causal", name="tiny-causal")


def tiny_masked(seed: int = 0, hidden: int = 64, layers: int = 2) -> Backend:
    from transformers import BertConfig, BertForMaskedLM

    _one_thread()
    tok = masked_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg)
    return Backend(model, tok, "masked", name="tiny-masked")

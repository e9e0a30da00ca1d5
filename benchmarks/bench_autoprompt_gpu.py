"""GPU time per iteration: ``autoprompt`` vs the reference AutoPrompt loop, random-weight ~1B Llama.

Runs on a machine with only torch + transformers (no pydantic, miner not installed)::

    PYTHONPATH=. python3 benchmarks/bench_autoprompt_gpu.py --out results/autoprompt  # H100/H200, < 3 min
    PYTHONPATH=. python3 benchmarks/bench_autoprompt_gpu.py --smoke --out /tmp/g   # CPU check, tiny model

The model is built from a config (TinyLlama-1.1B shape, bf16) with random weights and the
SmolLM2 tokenizer saved in ``miner/testing/assets/smollm2_tokenizer``; the examples are
synthetic sentences (random weights make accuracy meaningless: only time is measured).
For each setting, one warm-up iteration of each side, then ``--repeats`` interleaved
iterations (ref, ours, ref, ours, ...) from the same trigger and batches; median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _autoprompt_ref import OursStep, Reference, batches, hf, sync  # noqa: E402

from miner.models import Backend  # noqa: E402
from miner.prompts import Prompt  # noqa: E402

TOKENIZER_DIR = REPO / "miner" / "testing" / "assets" / "smollm2_tokenizer"
TEMPLATE = "{sentence} {trigger:3} {answer}"
VERBALIZER = {"negative": ["terrible"], "positive": ["great"]}
WORDS = (
    "the movie film story actor plot scene was is a an and but not very quite really good bad great dull funny "
    "boring moving slow fast long short best worst script music characters director ending beginning it "
    "this that of to in on with for as by at one two many few some every time year work"
).split()


@dataclass(frozen=True)
class Ex:
    fields: dict
    label: int

    def __hash__(self):
        return hash((tuple(self.fields.items()), self.label))


def tokenizer():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    except Exception:  # older transformers: build the fast tokenizer from the JSON directly
        return PreTrainedTokenizerFast(
            tokenizer_file=str(TOKENIZER_DIR / "tokenizer.json"),
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
        )


def build_backend(smoke: bool) -> Backend:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    dev = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    shape = (
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        if smoke
        else dict(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
        )
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype)
    return Backend(model, tok, "causal", name="random-llama-1.1b" if not smoke else "random-llama-tiny")


def examples(n: int, seed: int, words: int = 22) -> list[Ex]:
    rng = np.random.default_rng(seed)
    return [
        Ex({"sentence": " ".join(rng.choice(WORDS, size=words)).capitalize() + "."}, int(i % 2))
        for i in range(n)
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny model on the CPU (checks the script, not timings)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settings", default="8x32,24x100", help="batch x candidates pairs to time")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    be = build_backend(args.smoke)
    n_params = sum(p.numel() for p in be.model.parameters())
    train = examples(96, 0)
    p0 = Prompt.create(TEMPLATE, VERBALIZER, ("negative", "positive"), triggers=(0, 0, 0))
    init = be.tokenize(" the")
    prompt = p0.with_(triggers=init * 3)
    allowed = hf.allowed_tokens(be, prompt)
    results = []
    settings = [tuple(int(x) for x in s.split("x")) for s in args.settings.split(",")]
    if args.smoke:
        settings = [(4, 4)]
    for bsz, n_cand in settings:
        ref = Reference(be, prompt, allowed, n_cand, 0)
        ours = OursStep(be, prompt, allowed, objective="vocab", top_k=n_cand, n_candidates=n_cand, seed=0)
        stream = batches(train, bsz, 0)
        ref_t, ours_t = [], []
        for r in range(args.repeats + 1):  # the first is a warm-up
            gb, cb = next(stream), next(stream)
            sync(be)
            s = time.perf_counter()
            ref.step(prompt.triggers, gb, cb)
            sync(be)
            t_ref = time.perf_counter() - s
            s = time.perf_counter()
            ours.step(prompt.triggers, gb, cb)
            sync(be)
            t_ours = time.perf_counter() - s
            if r:
                ref_t.append(t_ref)
                ours_t.append(t_ours)
        row = {
            "batch_size": bsz,
            "candidates": n_cand,
            "reference_s": ref_t,
            "ours_s": ours_t,
            "reference_median_s": statistics.median(ref_t),
            "ours_median_s": statistics.median(ours_t),
            "speedup": statistics.median(ref_t) / statistics.median(ours_t),
            "reference_forward_passes_per_iter": ref.scorer.counter.total.forward_passes / (args.repeats + 1),
            "ours_forward_passes_per_iter": ours.scorer.counter.total.forward_passes / (args.repeats + 1),
        }
        results.append(row)
        print(
            f"batch {bsz} x {n_cand} candidates: reference {row['reference_median_s']:.3f} s/iter, "
            f"ours {row['ours_median_s']:.3f} s/iter, {row['speedup']:.1f}x",
            flush=True,
        )
    out = {
        "device": torch.cuda.get_device_name(0)
        if be.device.type == "cuda"
        else platform.processor() or "cpu",
        "model": be.name,
        "parameters": n_params,
        "dtype": str(be.dtype),
        "template": TEMPLATE,
        "trigger_length": 3,
        "sentence_words": 22,
        "results": results,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "seconds": time.perf_counter() - t_start,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoprompt_gpu.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

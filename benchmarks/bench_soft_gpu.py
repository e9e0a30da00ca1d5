"""GPU check of ``soft`` (bf16 autocast) and ``blackbox`` on a ~1B-parameter random Llama, vs PEFT.

Runs where only torch/transformers/peft exist (no pydantic, sklearn, sqlalchemy, datasets:
minimal stand-ins are installed for the two that the imported modules need, only if absent).
The model has random weights (built from a config: no download), the tokenizer is SmolLM2's
(miner/testing/assets/smollm2_tokenizer), the data are synthetic two-label sentences, so accuracies
mean nothing; the figures are the CUDA path working (bf16, no parameter gradients, finite
losses), seconds per training step of ``soft`` and of PEFT prompt tuning on the same batches,
seconds per ``blackbox`` candidate, and peak memory.

    PYTHONPATH=. python3 benchmarks/bench_soft_gpu.py --out /tmp/gpu_soft            # on the GPU machine
    PYTHONPATH=. python benchmarks/bench_soft_gpu.py --smoke --out /tmp/gpu_soft     # tiny, on a CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _shims() -> list[str]:
    """Minimal stand-ins for packages the GPU machine lacks (only what these imports touch)."""
    added = []
    if importlib.util.find_spec("pydantic") is None:
        m = types.ModuleType("pydantic")
        m.ConfigDict = dict
        m.TypeAdapter = None
        m.ValidationError = Exception
        sys.modules["pydantic"] = m
        added.append("pydantic")
    if importlib.util.find_spec("sklearn") is None:
        import numpy as np

        sk, metrics = types.ModuleType("sklearn"), types.ModuleType("sklearn.metrics")
        metrics.accuracy_score = lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p)))

        def f1_score(y, p, average="macro", labels=None, zero_division=0):
            y, p = np.asarray(y), np.asarray(p)
            out = []
            for c in labels if labels is not None else sorted(set(y) | set(p)):
                tp = np.sum((p == c) & (y == c))
                denom = np.sum(p == c) + np.sum(y == c)
                out.append(2 * tp / denom if denom else zero_division)
            return float(np.mean(out))

        metrics.f1_score = f1_score
        sk.metrics = metrics
        sys.modules["sklearn"], sys.modules["sklearn.metrics"] = sk, metrics
        added.append("sklearn")
    return added


POS = ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb", "delightful"]
NEG = ["dull", "awful", "boring", "tedious", "clumsy", "bland", "painful", "messy"]
NOUNS = ["film", "movie", "story", "script", "cast", "plot", "ending", "score"]


def synthetic(n: int, seed: int):
    from types import SimpleNamespace

    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = POS if label else NEG
        text = f"The {rng.choice(NOUNS)} was {rng.choice(words)} and the {rng.choice(NOUNS)} felt {rng.choice(words)} overall ."
        out.append(SimpleNamespace(fields={"sentence": text}, label=label))
    return out


class MiniEvaluate:
    """The runner's ``evaluate`` reduced to scoring train/dev (no leaderboard, no budget)."""

    def __init__(self, scorer, task):
        self.scorer, self.task, self.seen, self.evaluations = scorer, task, {}, []

    def __call__(self, prompts, *, extra=None):
        from miner.scoring import Cost
        from miner.search import Evaluation, SplitScore

        out = []
        for p in prompts:
            if p.key in self.seen:
                out.append(self.seen[p.key])
                continue
            splits = {}
            for name in ("train", "dev"):
                r = self.scorer.score(p, getattr(self.task, name))
                splits[name] = SplitScore(r.metrics["accuracy"], r.metrics, float(r.loglik), len(r.gold))
            ev = Evaluation(p, splits["train"], splits["dev"], Cost(), len(self.evaluations))
            self.seen[p.key] = ev
            self.evaluations.append(ev)
            out.append(ev)
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny model on the CPU (checks the script, not the GPU)"
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-tokens", type=int, default=20)
    args = ap.parse_args(argv)
    shims = _shims()

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from miner.artifacts import ArtifactStore
    from miner.models import Backend
    from miner.prompts import Prompt
    from miner.scoring import Scorer
    from miner.search import SearchContext
    from miner.search.soft import SoftSearcher, batch_indices

    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tok = AutoTokenizer.from_pretrained(str(ROOT / "miner" / "testing" / "assets" / "smollm2_tokenizer"))
    size = (
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        if args.smoke
        else dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **size,
    )
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise on the GPU: a 1B random init on the CPU takes a minute
        model = LlamaForCausalLM(cfg).to(dtype=dtype)
    build_s = time.perf_counter() - t0
    be = Backend(model, tok, "causal", name="random-llama")
    n_params = sum(p.numel() for p in model.parameters())
    n_ex = 8 if args.smoke else 64
    task = types.SimpleNamespace(
        train=synthetic(n_ex, 1),
        dev=synthetic(n_ex, 2),
        test=(),
        label_names=("negative", "positive"),
        text_fields=("sentence",),
    )
    seed_prompt = Prompt.create(
        "{sentence} It was {answer}", {"negative": "bad", "positive": "good"}, task.label_names
    )
    store = ArtifactStore(tempfile.mkdtemp(prefix="gpu-soft-"))
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": str(dtype),
        "params": n_params,
        "model_build_seconds": round(build_s, 1),
        "shims": shims,
        "torch": torch.__version__,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "n_tokens": args.n_tokens,
    }

    def context(scorer):
        return SearchContext(
            task=task, backend=be, scorer=scorer, seed=0, prompts=(seed_prompt,), artifacts=store, job_key=""
        )

    # soft, bf16 autocast on CUDA
    import logging

    times: list[float] = []
    losses: list[float] = []

    class Timer(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("soft: step") and msg.endswith("s)"):
                times.append(float(msg.rsplit("(", 1)[1][:-2]))
                losses.append(float(msg.split("loss ")[1].split(" ")[0]))

    lg = logging.getLogger("miner.search.soft")
    lg.setLevel(logging.DEBUG)
    lg.addHandler(Timer())
    scorer = Scorer(be, progress=False, soft_resolver=store.get_tensor)
    ctx = context(scorer)
    ctx.logger = lg
    ev = MiniEvaluate(scorer, task)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    SoftSearcher(
        n_tokens=args.n_tokens,
        steps=args.steps,
        batch_size=args.batch_size,
        eval_every=args.steps,
        patience=0,
        lr=0.01,
        init="text",
        init_text="Decide whether the review is positive or negative.",
    ).search(ctx, ev)
    soft_wall = time.perf_counter() - t0
    result["soft"] = {
        "wall_seconds": round(soft_wall, 2),
        "median_step_seconds": statistics.median(times) if times else None,
        "losses": losses,
        "all_finite": all(map(lambda x: x == x and abs(x) != float("inf"), losses)),
        "model_param_grads": sum(p.grad is not None for p in model.parameters()),
        "cost": scorer.counter.snapshot().to_dict(),
        "evaluations": len(ev.evaluations),
        "dev_scores": [e.dev.score for e in ev.evaluations],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
    }
    print(json.dumps(result["soft"], default=str), flush=True)

    # PEFT prompt tuning, same batches, same steps (its usual causal-LM loss on the answer token)
    try:
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        pm = get_peft_model(
            model,
            PromptTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=args.n_tokens,
                prompt_tuning_init=PromptTuningInit.RANDOM,
            ),
        )
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=0.01)
        ans = {
            0: tok(" bad", add_special_tokens=False)["input_ids"],
            1: tok(" good", add_special_tokens=False)["input_ids"],
        }
        ptimes = []
        for step in range(args.steps):
            t1 = time.perf_counter()
            batch = [task.train[i] for i in batch_indices(step, len(task.train), args.batch_size, 0)]
            seqs = [
                tok(e.fields["sentence"] + " It was", add_special_tokens=False)["input_ids"] + ans[e.label]
                for e in batch
            ]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
            labels = torch.tensor(
                [[-100] * (len(s) - 1) + s[-1:] + [-100] * (width - len(s)) for s in seqs], device=device
            )
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if device == "cuda":
                torch.cuda.synchronize()
            ptimes.append(time.perf_counter() - t1)
        result["peft"] = {
            "median_step_seconds": statistics.median(ptimes),
            "wall_seconds": round(sum(ptimes), 2),
        }
        model = pm.get_base_model()
    except ImportError as exc:
        result["peft"] = {"skipped": str(exc)}
    print(json.dumps(result["peft"], default=str), flush=True)

    # blackbox: seconds per candidate (forward passes only)
    if importlib.util.find_spec("cmaes") is not None:
        from miner.search.blackbox import BlackboxSearcher

        scorer = Scorer(be, progress=False, soft_resolver=store.get_tensor)
        ev = MiniEvaluate(scorer, task)
        t0 = time.perf_counter()
        pop, gens = (3, 1) if args.smoke else (8, 3)
        BlackboxSearcher(
            n_tokens=args.n_tokens, intrinsic_dim=200, popsize=pop, generations=gens, eval_every=gens
        ).search(context(scorer), ev)
        wall = time.perf_counter() - t0
        c = scorer.counter.snapshot()
        result["blackbox"] = {
            "wall_seconds": round(wall, 2),
            "candidates": pop * gens,
            "cost": c.to_dict(),
            "seconds_per_forward": round(c.seconds / max(1, c.forward_passes), 4),
        }
    else:
        result["blackbox"] = {"skipped": "cmaes is not installed"}
    print(json.dumps(result["blackbox"], default=str), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "soft_gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

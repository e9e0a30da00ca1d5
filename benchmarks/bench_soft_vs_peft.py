"""``soft`` vs PEFT's PromptTuningConfig: same model, data, virtual tokens, steps, lr, schedule, seed.

Both start from the same text initialisation, see the same batches in the same order
(``miner.search.soft.batch_indices``), use AdamW with the same linear warm-up/decay and
gradient clipping. PEFT trains with its standard recipe (causal-LM loss on the answer token,
right padding, full logits); ``soft`` trains through the scorer (left padding, logits of the
answer position only), once with the same LM loss and once with its default label
cross-entropy. Test accuracy of both is computed by the same scorer from the learned
embeddings (tests/test_peft_export.py shows PEFT's own forward gives the same label scores
within 1e-4). Wall time: the whole searcher (its training steps plus the evaluation of the
trained prompt on train and dev that makes its leaderboard row; the step-0 baseline row is
switched off with ``eval_init=False``, as PEFT's loop has no such row) vs PEFT's training
loop alone, plus the median time per optimiser step of each. The runs are interleaved in
one process.

    PYTHONPATH=. python benchmarks/bench_soft_vs_peft.py --steps 30 --max-test 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from _machine import cpu_model  # sibling module: benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMPLATE_TAIL = "Review: {sentence}\nSentiment: {answer}"
VERB = {"negative": ["negative"], "positive": ["positive"]}


def train_peft(model_name: str, data, args, init_text: str) -> tuple[torch.Tensor, float, list[float]]:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    from miner.models import load_backend
    from miner.search.soft import batch_indices

    be = load_backend(model_name)  # its own copy: PEFT wraps the model
    tok = be.tokenizer
    torch.manual_seed(args.seed)
    cfg = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=args.n_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=init_text,
        tokenizer_name_or_path=tok.name_or_path,
    )
    pm = get_peft_model(be.model, cfg)
    train = list(data.train)
    prefix, _ = TEMPLATE_TAIL.split(" {answer}")
    label_ids = [tok(" " + VERB[name][0], add_special_tokens=False)["input_ids"] for name in data.label_names]
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * args.steps), args.steps)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    step_times = []
    start = time.perf_counter()
    pm.train()
    for step in range(args.steps):
        t0 = time.perf_counter()
        batch = [train[i] for i in batch_indices(step, len(train), args.batch_size, args.seed)]
        seqs, labs = [], []
        for ex in batch:
            ids = tok(prefix.replace("{sentence}", ex.fields["sentence"].strip()), add_special_tokens=False)[
                "input_ids"
            ]
            ans = label_ids[ex.label]
            seqs.append(ids + ans)
            labs.append([-100] * len(ids) + ans)
        width = max(map(len, seqs))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        labels = torch.tensor([l + [-100] * (width - len(l)) for l in labs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        loss = pm(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in pm.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        step_times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    emb = pm.get_prompt_embedding_to_save("default").detach().float().cpu()
    return emb, wall, step_times


def train_ours(backend, data, args, init_text: str, loss: str):
    from miner.runner import run_searcher
    from miner.search.soft import SoftSearcher

    times: list[float] = []
    handler = _StepTimer(times)
    logging.getLogger("miner.search.soft").addHandler(handler)
    logging.getLogger("miner.search.soft").setLevel(logging.DEBUG)
    s = SoftSearcher(
        n_tokens=args.n_tokens,
        init="text",
        init_text=init_text,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=0.1,
        schedule="linear",
        max_grad_norm=1.0,
        loss=loss,
        eval_every=args.steps,
        eval_init=False,
        patience=0,
        project=False,
    )
    import tempfile

    from miner.artifacts import ArtifactStore
    from miner.prompts import Prompt

    seed_prompt = Prompt.create(TEMPLATE_TAIL, VERB, data.label_names)
    store = ArtifactStore(tempfile.mkdtemp(prefix="bench-soft-"))
    start = time.perf_counter()
    res = run_searcher(s, backend, data.without_test(), prompts=[seed_prompt], artifacts=store)
    wall = time.perf_counter() - start
    logging.getLogger("miner.search.soft").removeHandler(handler)
    last = [e for e in res.evaluations if e.prompt.soft][-1]  # the trained state (same step count as PEFT)
    return store.get_tensor(last.prompt.soft), last, wall, times, res


class _StepTimer(logging.Handler):
    def __init__(self, out):
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("soft: step") and msg.endswith("s)"):
            self.out.append(float(msg.rsplit("(", 1)[1][:-2]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="sst-2")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-tokens", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--init-text", default="Classify the sentiment of the movie review as positive or negative."
    )
    ap.add_argument("--out", default=str(ROOT / "results" / "soft" / "soft_vs_peft.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.chdir(ROOT)

    from miner.models import load_backend
    from miner.prompts import Prompt
    from miner.scoring import Scorer
    from miner.tasks import TaskSpec, load_task

    data = load_task(TaskSpec(source="kshot", name=args.task, max_test=args.max_test), 16, args.seed)
    backend = load_backend(args.model)
    results = {}
    # Interleaved: PEFT, ours (same LM loss), ours (default cross-entropy).
    emb, wall, times = train_peft(args.model, data, args, args.init_text)
    results["peft_prompt_tuning"] = {"tensor": emb, "wall_seconds": wall, "step_times": times}
    for loss in ("lm", "ce"):
        tensor, ev, wall, times, res = train_ours(backend, data, args, args.init_text, loss)
        results[f"soft_{loss}"] = {
            "tensor": tensor,
            "wall_seconds": wall,
            "step_times": times,
            "cost": res.cost.to_dict(),
        }
    # Test accuracy, same scorer for all, from the learned embeddings.
    layout = Prompt.create(
        f"{{soft:{args.n_tokens}}}{TEMPLATE_TAIL}", VERB, data.label_names, soft="soft:eval"
    )
    out = {}
    for name, r in results.items():
        tensor = r["tensor"]
        scorer = Scorer(backend, progress=False)
        test = scorer.score(layout, data.test, soft_embeds=tensor)
        dev = scorer.score(layout, data.dev, soft_embeds=tensor)
        out[name] = {
            "test_accuracy": test.metrics["accuracy"],
            "dev_accuracy": dev.metrics["accuracy"],
            "wall_seconds": round(r["wall_seconds"], 1),
            "median_step_seconds": round(statistics.median(r["step_times"]), 3) if r["step_times"] else None,
            "steps_timed": len(r["step_times"]),
            **({"cost": r["cost"]} if "cost" in r else {}),
        }
        logging.info("%s: %s", name, out[name])
    meta = {
        "command": " ".join([sys.executable] + sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": args.model,
        "task": args.task,
        "k": 16,
        "seed": args.seed,
        "n_tokens": args.n_tokens,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "init_text": args.init_text,
        "test_examples": len(data.test),
        "schedule": "linear, 10% warm-up",
        "max_grad_norm": 1.0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": out}, indent=2) + "\n")
    md = [
        f"# soft vs PEFT prompt tuning ({args.model}, {args.task} 16-shot seed {args.seed})",
        "",
        f"{args.n_tokens} virtual tokens, {args.steps} steps, batch {args.batch_size}, lr {args.lr}, AdamW, linear schedule "
        f"(10% warm-up), clip 1.0, same text init and same batch order. Test: {len(data.test)}-example seeded sample, same scorer. "
        f"CPU {meta['cpu']}, torch threads {meta['torch_threads']}, load average {tuple(round(x, 1) for x in meta['load_average'])}. "
        f"Command: `{meta['command']}` ({meta['date']}).",
        "",
        "| method | test acc | dev acc | wall s (whole run) | median s / step |",
        "|---|---|---|---|---|",
    ]
    for name, r in out.items():
        md.append(
            f"| {name} | {100 * r['test_accuracy']:.1f} | {100 * r['dev_accuracy']:.1f} | {r['wall_seconds']} | {r['median_step_seconds']} |"
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

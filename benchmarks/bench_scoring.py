"""Throughput of miner's scorer against a hand-written batched loop and a bare forward.

Three ways to score the first ``--n`` SST-2 test examples with the prompt
``"{sentence} It was {answer}"`` (negative: "terrible", positive: "great") on the default
model, timed in one process on the same machine and interleaved per repeat (S, a, b, S, ...):

- **S**: ``Scorer.score`` with a fresh scorer every repeat (no cross-repeat cache; the
  backend's tokenizer memo is cleared too, so every repeat tokenizes from scratch).
- **a**: the loop a user would write: batches of ``--batch-size`` in dataset order,
  ``tokenizer(texts, padding=True)`` with the tokenizer's default padding side, one forward
  with full logits, log-softmax at the answer position, the two label words, argmax.
- **b**: only ``backend.forward(batch, logits_to_keep=1)`` over exactly the batches the
  scorer builds (built before timing): the floor the scorer's own overhead sits on.

Writes ``scoring.json`` (every number) and ``scoring.md`` (table, machine, command) to ``--out``.
Usage: ``python benchmarks/bench_scoring.py [--n 512] [--repeats 3] [--batch-size 32] [--out results/scoring/]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model  # sibling module: benchmarks/ is on sys.path when a script runs

from miner.models import load_backend
from miner.prompts import Prompt
from miner.scoring import Scorer
from miner.tasks import TaskSpec, load_task

logger = logging.getLogger("bench_scoring")

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "{sentence} It was {answer}"
WORDS = {"negative": ["terrible"], "positive": ["great"]}
LABELS = ("negative", "positive")
TARGET_S_OVER_A = 1.3
TARGET_S_OVER_B = 0.95
MIN_AGREEMENT = 0.99


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="first N SST-2 test examples, dataset order")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("results") / "scoring")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "fewshot")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------- the three methods
def timed(fn):
    """Run ``fn()``; return (wall seconds, this process's CPU seconds, its result).

    Wall time (perf_counter) is the measure. CPU time is kept beside it because the machine
    may be shared: it counts only this process's work, so it moves less with other load.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


class ForwardClock:
    """Wraps ``backend.forward`` to add up the seconds spent inside it (two clock reads per batch).

    With it, each S repeat splits into model time and the scorer's own bookkeeping, both
    measured under the same load, which a shared machine makes worth having.
    """

    def __init__(self, backend):
        self.backend, self.inner, self.seconds = backend, backend.forward, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def __enter__(self):
        self.backend.forward = self
        return self

    def __exit__(self, *exc):
        del self.backend.forward  # back to the class method


def scorer_call(backend, prompt, examples, batch_size):
    """A zero-argument call to a fresh Scorer (the untimed setup is done here)."""
    # The tokenizer memo lives on the backend and would outlive a fresh Scorer; clear it so
    # every repeat pays for tokenization, as a first call would.
    backend.clear_caches()
    scorer = Scorer(backend, batch_size=batch_size, progress=False)
    return lambda: scorer.score(prompt, examples).preds


class UserLoop:
    """The straightforward batched loop: dataset order, tokenizer padding, full logits."""

    def __init__(self, backend, examples, batch_size):
        self.model = backend.model
        self.tok = backend.tokenizer
        self.texts = [f"{e.fields['sentence']} It was" for e in examples]
        self.batch_size = batch_size
        ids = []
        for label in LABELS:
            word_ids = self.tok(" " + WORDS[label][0], add_special_tokens=False)["input_ids"]
            assert len(word_ids) == 1, f"label word {WORDS[label][0]!r} is not one token: {word_ids}"
            ids.append(word_ids[0])
        self.label_ids = torch.tensor(ids)
        self.padding_side = self.tok.padding_side

    def batches(self):
        for i in range(0, len(self.texts), self.batch_size):
            yield self.tok(self.texts[i : i + self.batch_size], padding=True, return_tensors="pt")

    def __call__(self):
        preds = []
        with torch.inference_mode():
            for enc in self.batches():
                logits = self.model(**enc).logits  # [B, T, V], every position
                if self.padding_side == "right":
                    last = enc["attention_mask"].sum(1) - 1
                    at = logits[torch.arange(logits.shape[0]), last]
                else:  # left padding: the answer position is the last column
                    at = logits[:, -1]
                lp = torch.log_softmax(at.float(), dim=-1)
                preds.append(lp[:, self.label_ids].argmax(-1))
        return torch.cat(preds).numpy()

    def padding_stats(self):
        real = padded = 0
        for enc in self.batches():
            real += int(enc["attention_mask"].sum())
            padded += enc["attention_mask"].numel()
        return real, padded


def scorer_batches(backend, prompt, examples, batch_size):
    """Exactly the padded batches ``Scorer.score`` would run, from its public planner."""
    scorer = Scorer(backend, batch_size=batch_size, progress=False)
    reqs, _ = scorer.requests(prompt, examples)
    unique = list(dict.fromkeys(reqs))
    batches = scorer.batches_for([prompt], examples)
    kinds = {r.kind for r in unique}
    assert kinds == {"next"}, f"expected only next-token requests, got {kinds}"
    padded = [backend.pad([r.ids for r in b]) for b in batches]
    return padded, len(reqs), len(unique)


def run_bare(backend, padded):
    with torch.inference_mode():
        for batch in padded:
            backend.forward(batch, logits_to_keep=1)


# ---------------------------------------------------------------------------- reporting
def load_note(r: dict) -> str:
    # The benchmark itself keeps about torch_threads cores busy; more than that is someone else.
    m = r["machine"]
    busy = max(r["loadavg_1min_per_repeat"] + m["loadavg_end"][:1])
    if busy <= max(m["torch_threads"], 1) + 0.75:
        return "about this benchmark's own threads: the machine was otherwise idle"
    return (
        f"up to {busy:.1f} on {m['cpu_count']} cores: other processes shared the machine, so the "
        "numbers are noisy; trust the CPU-time columns and per-repeat ratios more, or rerun when idle"
    )


def write_markdown(path: Path, r: dict) -> None:
    m, s = r["machine"], r["summary"]
    rows = [
        ("S: Scorer.score (fresh scorer)", "S"),
        ("a: user loop (dataset order, full logits)", "a"),
        ("b: bare forward over scorer's batches", "b"),
    ]
    lines = [
        "# Scoring throughput",
        "",
        f"{r['config']['n']} SST-2 test examples, prompt `{TEMPLATE}` (terrible / great), "
        f"model `{r['config']['model']}` on {m['device']} {m['dtype']}, batch size {r['config']['batch_size']}, "
        f"{r['config']['repeats']} interleaved repeats, median reported.",
        "",
        "| method | median examples/s (wall) | per-repeat wall s | examples/s (CPU time) | real / padded tokens |",
        "|---|---:|---|---:|---|",
    ]
    for name, key in rows:
        pad = r["padding"].get(key)
        pad_s = (
            f"{pad['real_tokens']} / {pad['padded_tokens']} ({pad['real_fraction']:.0%} real)"
            if pad
            else "same as S"
        )
        secs = ", ".join(f"{t:.2f}" for t in r["seconds"][key])
        lines.append(
            f"| {name} | {s['examples_per_s'][key]:.2f} | {secs} | {s['cpu_examples_per_s'][key]:.2f} | {pad_s} |"
        )
    lines += [
        "",
        f"- **S/a = {s['S_over_a']:.2f}** (target >= {TARGET_S_OVER_A}: {'met' if s['S_over_a_met'] else 'NOT met'})",
        f"- **S/b = {s['S_over_b']:.3f}** (target >= {TARGET_S_OVER_B}: {'met' if s['S_over_b_met'] else 'NOT met'})",
        f"- by process CPU time instead of wall time: S/a {s['cpu_S_over_a']:.2f}, S/b {s['cpu_S_over_b']:.3f}",
        f"- share of S's wall time spent inside `backend.forward` (median): {s['S_forward_fraction']:.3f} "
        f"(seconds outside forward per repeat: {r['S_outside_forward_seconds']})",
        f"- per repeat (adjacent runs, same load): S/a {s['per_repeat_S_over_a']}, S/b {s['per_repeat_S_over_b']}",
        f"- prediction agreement S vs a: {s['agreement_S_a']:.4f} ({s['disagreements']} of {r['config']['n']} differ); "
        f"accuracy S {s['accuracy']['S']:.4f}, a {s['accuracy']['a']:.4f}",
        f"- scorer requests: {r['scorer']['requests']} ({r['scorer']['unique_requests']} unique) in "
        f"{r['scorer']['batches']} batches; the user loop runs {r['user_loop']['batches']} batches, "
        f"tokenizer padding side `{r['user_loop']['padding_side']}`",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores (os.cpu_count), torch threads {m['torch_threads']}",
        f"- torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}",
        f"- load average (1/5/15 min) at start {m['loadavg_start']}, at end {m['loadavg_end']}; "
        f"1-min load at the start of each repeat {r['loadavg_1min_per_repeat']} ({load_note(r)})",
        f"- date: {m['date']}",
        "",
        "## Command",
        "",
        f"```\n{r['command']}\n```",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    backend = load_backend(args.model)
    task = load_task(TaskSpec(source="kshot", root=str(args.data_root), name="sst-2"), k=16, seed=42)
    examples = list(task.test[: args.n])
    if len(examples) < args.n:
        raise SystemExit(f"SST-2 test has only {len(examples)} examples, asked for {args.n}")
    prompt = Prompt.create(TEMPLATE, WORDS, LABELS)
    gold = np.asarray([e.label for e in examples])

    user = UserLoop(backend, examples, args.batch_size)
    padded, n_reqs, n_unique = scorer_batches(backend, prompt, examples, args.batch_size)
    s_real = sum(int(b.attention_mask.sum()) for b in padded)
    s_pad = sum(b.attention_mask.numel() for b in padded)
    a_real, a_pad = user.padding_stats()

    # Warm-up (untimed): first-call allocations and kernel selection for every method.
    logger.info("warm-up")
    scorer_call(backend, prompt, examples[:8], args.batch_size)()
    UserLoop(backend, examples[:8], args.batch_size)()
    run_bare(backend, [backend.pad([b.input_ids[0, -8:].tolist()]) for b in padded[-1:]])

    secs = {"S": [], "a": [], "b": []}
    s_forward = []
    cpu = {"S": [], "a": [], "b": []}
    loads = []
    preds_s = preds_a = None
    for rep in range(args.repeats):
        loads.append(round(os.getloadavg()[0], 2))
        call = scorer_call(backend, prompt, examples, args.batch_size)
        with ForwardClock(backend) as clock:
            w, c, preds_s = timed(call)
        secs["S"].append(w), cpu["S"].append(c), s_forward.append(clock.seconds)
        w, c, preds_a = timed(user)
        secs["a"].append(w), cpu["a"].append(c)
        w, c, _ = timed(lambda: run_bare(backend, padded))
        secs["b"].append(w), cpu["b"].append(c)
        logger.info(
            "repeat %d (load %.2f): wall S %.2fs (forward %.2fs) a %.2fs b %.2fs | cpu S %.2fs a %.2fs b %.2fs",
            rep + 1,
            loads[-1],
            secs["S"][-1],
            s_forward[-1],
            secs["a"][-1],
            secs["b"][-1],
            *(cpu[k][-1] for k in "Sab"),
        )

    n = len(examples)
    eps = {k: n / statistics.median(v) for k, v in secs.items()}
    eps_cpu = {k: n / statistics.median(v) for k, v in cpu.items()}
    agree = float((preds_s == preds_a).mean())
    s_over_a, s_over_b = eps["S"] / eps["a"], eps["S"] / eps["b"]
    result = {
        "config": {
            "n": n,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "model": args.model,
            "template": TEMPLATE,
            "words": WORDS,
            "dataset": "sst-2 test (kshot), first n in order",
        },
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "seconds": {k: [round(t, 4) for t in v] for k, v in secs.items()},
        "S_forward_seconds": [round(t, 4) for t in s_forward],
        "S_outside_forward_seconds": [round(w - f, 4) for w, f in zip(secs["S"], s_forward)],
        "cpu_seconds": {k: [round(t, 4) for t in v] for k, v in cpu.items()},
        "loadavg_1min_per_repeat": loads,
        "summary": {
            "examples_per_s": {k: round(v, 3) for k, v in eps.items()},
            "S_over_a": round(s_over_a, 4),
            "S_over_a_target": TARGET_S_OVER_A,
            "S_over_a_met": s_over_a >= TARGET_S_OVER_A,
            "S_over_b": round(s_over_b, 4),
            "S_over_b_target": TARGET_S_OVER_B,
            "S_over_b_met": s_over_b >= TARGET_S_OVER_B,
            "cpu_examples_per_s": {k: round(v, 3) for k, v in eps_cpu.items()},
            "cpu_S_over_a": round(eps_cpu["S"] / eps_cpu["a"], 4),
            "cpu_S_over_b": round(eps_cpu["S"] / eps_cpu["b"], 4),
            "S_forward_fraction": round(statistics.median(f / w for f, w in zip(s_forward, secs["S"])), 4),
            "per_repeat_S_over_a": [round(a / s, 4) for s, a in zip(secs["S"], secs["a"])],
            "per_repeat_S_over_b": [round(b / s, 4) for s, b in zip(secs["S"], secs["b"])],
            "agreement_S_a": agree,
            "disagreements": int((preds_s != preds_a).sum()),
            "accuracy": {"S": float((preds_s == gold).mean()), "a": float((preds_a == gold).mean())},
        },
        "padding": {
            "S": {"real_tokens": s_real, "padded_tokens": s_pad, "real_fraction": s_real / s_pad},
            "a": {"real_tokens": a_real, "padded_tokens": a_pad, "real_fraction": a_real / a_pad},
        },
        "scorer": {
            "requests": n_reqs,
            "unique_requests": n_unique,
            "batches": len(padded),
            "batch_widths": [int(b.input_ids.shape[1]) for b in padded],
        },
        "user_loop": {
            "batches": -(-n // args.batch_size),
            "padding_side": user.padding_side,
            "logits_positions": a_pad,
            "scorer_logits_positions": n_unique,
        },
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "device": str(backend.device),
            "dtype": str(backend.dtype).replace("torch.", ""),
            "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scoring.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "scoring.md", result)
    print((args.out / "scoring.md").read_text())
    if agree < MIN_AGREEMENT:
        print(f"FAIL: S and a agree on {agree:.4f} of examples (< {MIN_AGREEMENT})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

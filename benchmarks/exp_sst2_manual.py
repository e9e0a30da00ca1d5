"""SST-2 (k-shot layout, seed 42): `miner run` with manual prompts vs a hand-written scoring loop.

Runs configs/sst2_manual.yaml through the runner (full SST-2 test set), then scores the same
test sentences with the loop a user would write for the answer-at-the-end template (one sentence
at a time, no padding, argmax over the label words' next-token logits), and writes
results/manual/sst2_manual.{json,md}. (The teacher-forced path for answer-mid templates is checked
against direct computation in tests/test_scoring.py.)

    python benchmarks/exp_sst2_manual.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def hand_written(backend, sentences, prefix_fmt, words):
    """One sentence at a time, no padding: the label words' next-token logits after the prefix."""
    tok, model = backend.tokenizer, backend.model
    word_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    preds = []
    with torch.no_grad():
        for s in sentences:
            ids = tok(prefix_fmt.format(sentence=s), return_tensors="pt")["input_ids"]
            logits = model(ids).logits[0, -1]
            preds.append(int(torch.argmax(logits[word_ids])))
    return preds


def main() -> None:
    torch.set_num_threads(1)  # the machine is shared; one thread per process wastes least
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "sst2_manual.yaml"))
    ap.add_argument("--out", default=str(ROOT / "results" / "manual"))
    args = ap.parse_args()

    from miner.config import load_config
    from miner.leaderboard import Leaderboard
    from miner.models import load_backend
    from miner.runner import run
    from miner.tasks import load_task

    cfg = load_config(args.config)
    backend = load_backend(cfg.model.name)
    t0 = time.perf_counter()
    result = run(cfg, backend=backend, progress=False)
    run_seconds = time.perf_counter() - t0
    rows = Leaderboard(result.storage).rows(run_id=result.run_id)
    test = load_task(cfg.task, cfg.k[0], cfg.seeds[0]).test
    sentences = [e.fields["sentence"] for e in test]
    gold = [e.label for e in test]

    out = []
    for r in rows:
        tpl = r.prompt["template"]
        words = [" " + r.prompt["verbalizer"][label][0] for label in ("negative", "positive")]
        entry = {
            "template": tpl,
            "words": words,
            "calibrate": bool(r.prompt.get("calibrate")),
            "train": r.train_score,
            "dev": r.dev_score,
            "test_miner": r.test_score,
        }
        before, after = tpl.split("{answer}")
        if not entry["calibrate"] and not after.strip():  # answer at the end: next-token loop
            t1 = time.perf_counter()
            preds = hand_written(backend, sentences, before.rstrip(" "), words)
            entry["test_hand_written"] = sum(p == g for p, g in zip(preds, gold)) / len(gold)
            entry["hand_written_seconds"] = time.perf_counter() - t1
        out.append(entry)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "n_test": len(test),
        "run_seconds": run_seconds,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sst2_manual.json").write_text(json.dumps({"meta": meta, "rows": out}, indent=2))
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [
        "# SST-2 manual prompts: miner vs a hand-written loop",
        "",
        f"Task: SST-2, k-shot layout, k=16, seed 42; full test set ({len(test)} sentences). Model: SmolLM2-135M-Instruct (CPU, float32).",
        f"Machine: {meta['machine']}, {meta['cpu_count']} cores, torch threads {meta['torch_threads']}; {meta['date']}.",
        f"Command: `{meta['command']}`",
        "",
        "| template | words | calibrated | train | dev | test (miner run) | test (hand-written loop) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in out:
        lines.append(
            f"| `{e['template']!r}` | {'/'.join(w.strip() for w in e['words'])} | {'yes' if e['calibrate'] else 'no'} | "
            f"{fmt(e['train'])} | {fmt(e['dev'])} | {fmt(e['test_miner'])} | {fmt(e.get('test_hand_written'))} |"
        )
    (Path(args.out) / "sst2_manual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

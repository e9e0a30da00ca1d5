"""The ``miner`` command line. Every subcommand is a thin wrapper over a Python call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miner.errors import MinerError

DEFAULT_STORAGE = "sqlite:///miner.db"
SEED_MAX = 2**32 - 1  # what numpy's and torch's seeding accept

EPILOG = """examples (every command reads and writes ./miner.db unless --storage or $MINER_STORAGE says otherwise):
  miner validate configs/quickstart.yaml            check a config (data, prompts, searchers, model) without running it
  miner run configs/quickstart.yaml                 run a mining job, print its leaderboard
  miner leaderboard --task rotten_tomatoes          best prompts so far (by dev score)
  miner export --task rotten_tomatoes -o best.json  write the best prompt as JSON
  miner predict --prompt best.json --text "A gem."  apply it to new text
  miner plot --task rotten_tomatoes -o board.png    best dev score against cost; dev against test
  miner searchers                                   list the registered searchers
  miner bench configs/bench_quick.yaml              searchers against baselines at one budget: report.html

errors are one line; add --debug to see the traceback of an unexpected one.
"""


def default_storage() -> str:
    """``$MINER_STORAGE`` when set, else ./miner.db: the same default for every command."""
    return os.environ.get("MINER_STORAGE") or DEFAULT_STORAGE


def _int_in(lo: int, hi: int | None, what: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {value!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(
                f"{what} must be in {lo}..{hi if hi is not None else 'any'}, got {n}"
            )
        return n

    return parse


def _k_arg(value: str) -> Any:
    if value.lower() in ("full", "none", "null"):
        return None
    return _int_in(0, 2**31 - 1, "k")(value)


def _add_filters(p: argparse.ArgumentParser, task_required: bool = False) -> None:
    p.add_argument(
        "--storage",
        help=f"leaderboard database URL or SQLite file (default: $MINER_STORAGE, else {DEFAULT_STORAGE})",
    )
    p.add_argument("--task", required=task_required, help="task name")
    p.add_argument("--model", help="model name as in the config")
    p.add_argument("--searcher", help="searcher name")
    p.add_argument("--seed", type=_int_in(0, SEED_MAX, "--seed"), help="job seed")
    p.add_argument("--k", type=_k_arg, default=..., help="shots per class ('full' for full data)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="miner",
        description="Automatic prompt mining and search for frozen language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="run a mining job from a YAML config",
        description="Run a mining job: every task x model x searcher x seed x k, scored on train/dev, best prompts scored on test, all rows written to the leaderboard. The whole config is checked first (as 'miner validate' does): bad input writes nothing.",
    )
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument(
        "--storage", help="override the config's storage URL (else $MINER_STORAGE, else the config's)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run: reuse the rows, test scores and searcher state of identical jobs already in storage; a job another live process is running is waited for",
    )
    p.add_argument(
        "--limit",
        type=_int_in(0, None, "--limit"),
        default=20,
        help="rows of the run's leaderboard to print (default: %(default)s; 0 = all)",
    )
    p.add_argument(
        "--jobs",
        type=_int_in(1, 4096, "--jobs"),
        metavar="N",
        help="run the jobs on N joblib worker processes (overrides parallel.n_jobs; each loads the model once)",
    )

    p = sub.add_parser(
        "validate",
        help="check a config without running it",
        description="Check a config as 'miner run' does before its first row: keys and types, every job's data, every prompt against the task's fields and the model's tokenizer, every searcher's parameters. Loads the model; writes nothing.",
    )
    p.add_argument("config", help="YAML config (see configs/)")

    p = sub.add_parser(
        "leaderboard",
        help="show the leaderboard (filterable)",
        description="Show evaluated prompts, best first.",
    )
    _add_filters(p)
    p.add_argument("--run", dest="run_id", help="only this run (its id or a unique prefix of it)")
    p.add_argument(
        "--order", choices=["dev", "test", "time"], default="dev", help="sort order (default: %(default)s)"
    )
    p.add_argument(
        "--limit",
        type=_int_in(0, None, "--limit"),
        default=20,
        help="rows to show (default: %(default)s; 0 = all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    p = sub.add_parser(
        "export",
        help="write the best prompt of a task/model as JSON",
        description="Write the best prompt (by dev score, ties by dev log-likelihood; each job is represented by its pick: the runner's guarded pick by default, see docs/selection.md) as a JSON file with its scores and provenance.",
    )
    _add_filters(p, task_required=True)
    p.add_argument("-o", "--output", required=True, help="output JSON file")

    p = sub.add_parser(
        "predict",
        help="apply an exported prompt to new text",
        description="Label new text with an exported prompt (discrete or soft). Output: one tab-separated line per input: label, probability, text.",
    )
    p.add_argument(
        "--prompt",
        required=True,
        help="JSON file written by 'miner export' (or a soft-prompt export directory)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to label (repeatable)")
    src.add_argument(
        "--input",
        help="a file: .txt (one text per line), .csv/.tsv/.jsonl (columns = the task's text fields)",
    )
    p.add_argument("--model", help="override the exported prompt's model")
    p.add_argument(
        "--max-input-mb", type=float, default=64.0, help="largest --input file read (default: %(default)s MB)"
    )
    p.add_argument("--json", action="store_true", help="print JSON lines with all label probabilities")

    p = sub.add_parser(
        "plot",
        help="plot best dev score against cost, and dev against test",
        description="Draw two panels from the leaderboard: best dev score so far against forward passes spent (one line per job, coloured by searcher), and dev against test score for the test-scored rows.",
    )
    _add_filters(p)
    p.add_argument("--run", dest="run_id", help="only this run (its id or a unique prefix of it)")
    p.add_argument("-o", "--output", required=True, help="image file to write (.png, .pdf or .svg)")
    p.add_argument("--title", help="figure title (default: task, model and row count)")

    p = sub.add_parser(
        "searchers",
        help="list the searchers, or one searcher's parameters",
        description="List the registered searchers (built in, and installed plugins of the "
        "'miner.searchers' entry-point group), one line each; with a NAME, that "
        "searcher's parameters: type, default and meaning.",
    )
    p.add_argument("name", nargs="?", help="a searcher to describe")

    p = sub.add_parser(
        "bench",
        help="compare searchers and baselines at one budget: tables, plots and an HTML report",
        description="Run a bench config (configs/bench_quick.yaml, configs/bench.yaml): every task x searcher x "
        "seed x k at the same budget in forward-pass equivalents (a backward pass charged at its measured "
        "cost), on the same splits and test sample, with the baselines (hand-written prompts raw and "
        "calibrated, zero-shot, demonstrations, a linear probe, PEFT prompt tuning), paired statistics "
        "against the best hand-written prompt by dev, and a report folder: report.md, report.html, "
        "jobs.csv and the plots. The whole grid is checked first: bad input runs no job.",
    )
    p.add_argument("config", help="bench YAML config (see configs/bench_quick.yaml and docs/bench.md)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a bench whose folder exists: finished jobs are not re-run, a killed job continues "
        "from its stored rows, test scores already computed are reused",
    )
    p.add_argument(
        "--jobs",
        type=_int_in(1, 4096, "--jobs"),
        metavar="N",
        help="run each searcher's seeds on N joblib workers (parallel.backend in the config: loky or dask)",
    )
    p.add_argument("--out", help="the report folder (default: the config's out:, else results/bench/<name>)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the job records already in the folder and run nothing (a partial "
        "report of a bench that is running elsewhere or was stopped; the model is not loaded)",
    )
    return parser


def _reader(storage: str | None):
    """The leaderboard for a command that only reads: it must exist; nothing is created."""
    from miner.leaderboard import Leaderboard

    return Leaderboard(storage or default_storage(), create=False)


def _run_filter(board, run_id: str | None) -> str | None:
    return None if run_id is None else board.resolve_run_id(run_id)


def _cmd_run(args) -> int:
    from miner.leaderboard import Leaderboard, format_table
    from miner.runner import run

    storage = args.storage or os.environ.get("MINER_STORAGE") or None
    result = run(
        args.config,
        storage=storage,
        progress=False if args.no_progress else None,
        resume=args.resume or None,
        n_jobs=args.jobs,
    )
    print(f"run {result.run_id} -> {result.display_storage}")
    for jr in result.jobs:
        j = jr.job
        best = jr.best
        dev = f"{100 * best.dev.score:.1f}" if best and best.dev else "-"
        test = f"{100 * jr.best_test:.1f}" if jr.best_test is not None else "-"
        stop = f"  (budget: {jr.stopped_by_budget})" if jr.stopped_by_budget else ""
        print(
            f"  {j.label}: {len(jr.evaluations)} prompts, best dev {dev}, test {test}, "
            f"{jr.cost.forward_passes} forward passes, {jr.seconds:.1f}s{stop}"
        )
        if jr.decision is not None:
            print(f"    {jr.decision.line()}")
    decided = [jr.decision for jr in result.jobs if jr.decision is not None]
    guarded = [d for d in decided if d.manual is not None and d.unguarded is not None and d.guard is not None]
    if guarded:
        fired = sum(d.fired for d in guarded)
        print(
            f"guard: kept the hand-written prompt over the searcher's pick in {fired} of {len(guarded)} job(s) "
            f"(pick: {decided[0].mode}, ranking: {', '.join(sorted({d.rule for d in decided}))})"
        )
    board = Leaderboard(result.storage)
    rows = board.rows(run_id=result.run_id, limit=args.limit or None)
    print(format_table(rows))
    if result.jobs:
        # the readers' default is the same as run's, so the hint names --storage only when it differs
        where = "" if result.storage == default_storage() else f" --storage {result.display_storage}"
        task = result.jobs[0].job.task.name
        print(
            f"next: miner export{where} --task {task} -o best.json   (then: miner predict --prompt best.json --text ...)"
        )
    return 0


def _cmd_validate(args) -> int:
    from miner.runner import prepare

    prep = prepare(
        args.config, storage=os.environ.get("MINER_STORAGE") or None, keep_backend=True, dry_run=True
    )
    cfg = prep.cfg
    assert prep.backend is not None  # keep_backend=True: prepare holds on to the model it loaded
    names = ", ".join(s.name for s in prep.searchers)
    print(
        f"{args.config}: ok: {prep.n_jobs} job(s) ({len(prep.datasets)} data draw(s) x searchers {names}), "
        f"{len(prep.prompts)} prompt(s), model {cfg.model.name} ({prep.backend.kind} LM), task {cfg.task.name}"
    )
    return 0


def _cmd_leaderboard(args) -> int:
    from miner.leaderboard import format_table

    board = _reader(args.storage)
    rows = board.rows(
        task=args.task,
        model=args.model,
        searcher=args.searcher,
        seed=args.seed,
        k=args.k,
        run_id=_run_filter(board, args.run_id),
        limit=args.limit or None,
        order=args.order,
    )
    if args.json:
        import dataclasses

        for r in rows:
            print(json.dumps(dataclasses.asdict(r), default=str, ensure_ascii=False))
    elif not rows:
        print("no rows match", file=sys.stderr)
    else:
        print(format_table(rows))
    return 0


def _cmd_export(args) -> int:
    from miner.export import check_output_path, export_best

    check_output_path(args.output)  # before any work: a bad -o is the first thing said
    storage = args.storage or default_storage()
    _reader(storage).close()  # a missing leaderboard is an error, not a new empty one
    ex = export_best(
        storage,
        task=args.task,
        model=args.model,
        searcher=args.searcher,
        seed=args.seed,
        k=args.k,
        out=args.output,
    )
    s = ex.scores
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(
        f"wrote {args.output}: {ex.prompt.describe()}  train {fmt(s['train'])} dev {fmt(s['dev'])} test {fmt(s['test'])}"
    )
    if ex.prompt.soft is not None:
        print(
            f"soft prompt tensor, description and PEFT adapter (where the layout allows) in {Path(args.output).with_suffix('')}/"
        )
    return 0


def _read_inputs(path: str, max_mb: float) -> list[Any]:
    """The texts of an input file: a regular file of at most ``max_mb`` (no FIFO, device or endless file)."""
    from miner.tasks import decode_utf8, read_bytes_bounded, read_table

    p = Path(path)
    limit = int(max_mb * 2**20)
    if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return [dict(row) for row in read_table(p, max_bytes=limit).rows]  # rows are already {column: value}
    data = read_bytes_bounded(p, f"input file {path}", limit, setting="--max-input-mb")
    return [line for line in decode_utf8(data, path).splitlines() if line.strip()]


def _soft_export_path(path: str) -> str | None:
    """The soft-prompt export a prompt file points to (a directory, its description, or our JSON)."""
    from miner.export import soft_export_dir
    from miner.soft_export import is_soft_export

    if is_soft_export(path):
        return path
    d = soft_export_dir(path)  # never raises: a bad file is load_exported's to explain
    return str(d) if d is not None else None


def _cmd_predict(args) -> int:
    from miner.export import load_exported, predict
    from miner.models import load_backend

    inputs = args.text if args.text else _read_inputs(args.input, args.max_input_mb)
    soft = _soft_export_path(args.prompt)
    if soft is not None:
        from miner.soft_export import load_soft_export, predict_soft

        se = load_soft_export(soft)
        items = predict_soft(se, inputs, backend=load_backend(args.model or se.exported.model), progress=True)
    else:
        ex = load_exported(args.prompt)
        items = predict(ex, inputs, backend=load_backend(args.model or ex.model), progress=True)
    for item in items:
        if args.json:
            print(json.dumps(item, ensure_ascii=False))
        else:
            text = " | ".join(item["input"].values()).replace("\t", " ").replace("\n", " ")
            print(f"{item['label']}\t{item['probabilities'][item['label']]:.3f}\t{text}")
    return 0


def _cmd_plot(args) -> int:
    from miner.plot import plot_leaderboard

    board = _reader(args.storage)
    run_id = _run_filter(board, args.run_id)
    board.close()
    out = plot_leaderboard(
        args.storage or default_storage(),
        args.output,
        task=args.task,
        model=args.model,
        searcher=args.searcher,
        seed=args.seed,
        k=args.k,
        run_id=run_id,
        title=args.title,
    )
    print(f"wrote {out}")
    return 0


def _caps(cls) -> str:
    caps = cls.capabilities
    kinds = "/".join(sorted(caps.model_kinds))
    grad = ", gradients" if caps.needs_gradients else ""
    seeds = ", needs prompts" if caps.needs_seed_prompts else ""
    return f"[{caps.prompt_kind}; {kinds} LMs{grad}{seeds}]"


def _cmd_searchers(args) -> int:
    from miner.search import parameters, searchers

    if args.name is None:
        for name, cls in searchers.items():
            print(f"{name:12s} {cls.summary}  {_caps(cls)}")
        for name, why in sorted(searchers.broken.items()):
            print(f"{name:12s} (plugin failed to load: {why})")
        return 0
    cls = searchers.get(args.name)
    print(f"{cls.name}: {cls.summary}  {_caps(cls)}")
    if cls.__doc__:
        print(f"  {' '.join(cls.__doc__.split())}")
    params = parameters(cls)
    width = max((len(p.name) for p in params), default=0)
    print("parameters (searchers[].params in a config):" if params else "no parameters")
    for p in params:
        default = (
            json.dumps(p.default) if isinstance(p.default, (str, list, dict, bool, type(None))) else p.default
        )
        print(f"  {p.name:{width}s}  {p.type} = {default}")
        if p.description:
            print(f"  {'':{width}s}    {p.description}")
    return 0


def _cmd_bench(args) -> int:
    from miner.benchmark import bench

    command = " ".join(["miner", "bench", *(sys.argv[2:] if len(sys.argv) > 2 else [args.config])])
    result = bench(
        args.config,
        resume=args.resume,
        n_jobs=args.jobs,
        out=args.out,
        progress=False if args.no_progress else None,
        command=command,
        report_only=args.report_only,
    )
    print(f"bench {result.out.name}: {len(result.jobs)} job record(s) in {result.seconds / 60:.1f} min")
    for key in ("md", "html", "csv"):
        if key in result.files:
            print(f"  {key:4s} {result.files[key]}")
    if "html" in result.files:
        print(f"open it: xdg-open {result.files['html']}   (one self-contained file; works offline)")
    return 0


COMMANDS = {
    "bench": _cmd_bench,
    "run": _cmd_run,
    "validate": _cmd_validate,
    "leaderboard": _cmd_leaderboard,
    "export": _cmd_export,
    "predict": _cmd_predict,
    "plot": _cmd_plot,
    "searchers": _cmd_searchers,
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error:`` line with exit 2, like every other error."""

    def error(self, message: str):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _quiet_third_parties() -> None:
    """No transformers/hub warnings or weight-loading bars: miner prints its own status lines (-vv shows theirs)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (a notebook, a test): the variables came too late
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _show_status() -> None:
    """Print the runner's phase lines (and the default model's one-time conversion) on stdout."""
    for name in ("miner.status", "miner.models._default"):
        log = logging.getLogger(name)
        if not any(isinstance(h, _StdoutHandler) for h in log.handlers):
            log.addHandler(_StdoutHandler())
        log.setLevel(logging.INFO)
        log.propagate = False


class _StdoutHandler(logging.StreamHandler):
    """Plain message lines on whatever ``sys.stdout`` is at the time (a notebook or test may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc} (see --help)", file=sys.stderr)
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        _quiet_third_parties()
    if args.command in ("run", "validate", "bench"):
        _show_status()
    try:
        return COMMANDS[args.command](args)
    except MinerError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "error: out of memory (an input or a setting asks for more than this machine has); "
            "re-run with --debug for the traceback",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback by default
        if args.debug:
            traceback.print_exc()
            return 1
        what = _one_line(exc) or "no message"
        print(
            f"error: unexpected {type(exc).__name__}: {what[:300]} (a bug in miner or a dependency; "
            "re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

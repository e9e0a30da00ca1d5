"""Export the best prompt to JSON, load it back, and apply it to new text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from miner._io import atomic_write_text, read_format_json
from miner.errors import MinerError
from miner.prompts import Prompt, PromptEnsemble

FORMAT = "miner-prompt/1"


@dataclass(frozen=True)
class ExportedPrompt:
    prompt: Prompt
    model: str
    task: dict[str, Any]  # name, text_fields, label_names, metric, k, seed
    scores: dict[str, Any]
    provenance: dict[str, Any]
    leaderboard: dict[str, Any]

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.task["label_names"])

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(self.task["text_fields"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "prompt": self.prompt.to_dict(),
            "model": self.model,
            "task": self.task,
            "scores": self.scores,
            "leaderboard": self.leaderboard,
            "provenance": self.provenance,
        }


def export_best(
    storage: str,
    *,
    task: str,
    model: str | None = None,
    searcher: str | None = None,
    seed: int | None = None,
    k: Any = ...,
    out: str | Path | None = None,
) -> ExportedPrompt:
    """Write the best leaderboard prompt of a task/model as JSON: by dev score, or a job's declared pick (its ensemble)."""
    from miner.leaderboard import Leaderboard
    from miner.runner import code_version

    board = Leaderboard(storage)
    try:
        if model is None:
            models = sorted({r.model for r in board.rows(task=task)})
            if not models:
                raise MinerError(f"no leaderboard rows for task {task!r} in {board.display_url}")
            if len(models) > 1:
                raise MinerError(f"task {task!r} has rows for several models {models}; pick one with --model")
            model = models[0]
        row = board.best(task=task, model=model, searcher=searcher, seed=seed, k=k)
        if row is None:
            raise MinerError(f"no leaderboard rows match task={task!r} model={model!r}" + (f" searcher={searcher!r}" if searcher else ""))
        runs = {r.run_id: r for r in board.runs()}
        run = runs.get(row.run_id)
        cfg = run.config if run else {}
    finally:
        board.close()
    prompt = Prompt.from_dict(row.prompt)
    labels = list(prompt.verbalizer.labels)
    task_cfg = cfg.get("task", {})
    fields = list(prompt.fields if isinstance(prompt, PromptEnsemble) else prompt.parsed.fields)
    exported = ExportedPrompt(
        prompt=prompt,
        model=model,
        task={
            "name": task,
            "text_fields": task_cfg.get("text_fields") or fields,
            "label_names": labels,
            "metric": row.metric,
            "k": row.k,
            "seed": row.seed,
            "spec": task_cfg,
        },
        scores={
            "metric": row.metric,
            "train": row.train_score,
            "dev": row.dev_score,
            "dev_loglik": row.dev_loglik,
            "test": row.test_score,
            "n_train": row.n_train,
            "n_dev": row.n_dev,
            "n_test": row.n_test,
        },
        provenance={
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exported_by": code_version(),
            "searcher": row.searcher,
            "created_at": str(row.created_at),
            "versions": row.versions,
            "run_config": cfg,
        },
        leaderboard={"storage": board.display_url, "row_id": row.id, "run_id": row.run_id},
    )
    if out is not None:
        d = exported.to_dict()
        if exported.prompt.soft is not None:
            # The tensor lives in the run's artifact store: copy it out beside the JSON, with a
            # PEFT prompt-tuning adapter where the layout allows one.
            from miner.artifacts import artifacts_for_storage
            from miner.soft_export import export_soft

            soft_dir = Path(out).with_suffix("")
            store = artifacts_for_storage(storage, cfg.get("artifacts"))
            export_soft(exported, store, soft_dir)
            d["soft_export"] = soft_dir.name
        atomic_write_text(Path(out), json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    return exported


def load_exported(path: str | Path) -> ExportedPrompt:
    p = Path(path)
    if not p.is_file():
        raise MinerError(f"prompt file {str(p)!r} does not exist")
    d = read_format_json(p, FORMAT, "prompt file")
    try:
        task = d["task"]
        prompt = Prompt.from_dict(d["prompt"], task["label_names"])
        return ExportedPrompt(prompt, d["model"], task, d.get("scores", {}), d.get("provenance", {}), d.get("leaderboard", {}))
    except KeyError as exc:
        raise MinerError(f"prompt file {str(p)!r} lacks the key {exc.args[0]!r}") from None


def predict(
    exported: ExportedPrompt | str | Path,
    inputs: Iterable[str | Mapping[str, str]],
    *,
    backend: Any = None,
    batch_size: int = 32,
    progress: bool = False,
    soft_resolver: Any = None,
) -> list[dict[str, Any]]:
    """Apply an exported prompt: each input is a text (single-field task) or a field mapping.

    ``soft_resolver`` maps a soft prompt's reference to its tensor (see ``miner.soft_export``).
    """
    from miner.models import load_backend
    from miner.scoring import Scorer

    ex = exported if isinstance(exported, ExportedPrompt) else load_exported(exported)
    rows = _as_rows(inputs, ex.text_fields)
    if backend is None:
        backend = load_backend(ex.model)
    scorer = Scorer(backend, batch_size=batch_size, progress=progress, soft_resolver=soft_resolver)
    result = scorer.score(ex.prompt, rows)
    labels = ex.label_names
    out = []
    for row, pred, scores in zip(rows, result.preds, result.scores):
        probs = {label: float(p) for label, p in zip(labels, _softmax(scores))}
        out.append({"label": labels[int(pred)], "probabilities": probs, "input": row})
    return out


def _softmax(logps: Sequence[float]) -> list[float]:
    import math

    m = max(logps)
    e = [math.exp(x - m) for x in logps]
    s = sum(e)
    return [x / s for x in e]


def _as_rows(inputs: Iterable[str | Mapping[str, str]], text_fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            if len(text_fields) != 1:
                raise MinerError(f"this prompt needs the fields {list(text_fields)}; give each input as a mapping (JSON Lines or CSV)")
            rows.append({text_fields[0]: item})
        else:
            missing = [f for f in text_fields if f not in item]
            if missing:
                raise MinerError(f"input {i + 1} lacks the field {missing[0]!r} (needs {list(text_fields)})")
            rows.append({f: str(item[f]) for f in text_fields})
    if not rows:
        raise MinerError("no input text given")
    return rows

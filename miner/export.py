"""Export the best prompt to JSON, load it back, and apply it to new text.

An export file is plain JSON that users keep, copy and sometimes edit by hand, so reading
one validates every key against :class:`ExportFile` (pydantic, strict: ``"false"`` is not a
boolean, ``5`` is not a model name) and then builds the prompt through the ``Prompt`` /
``PromptEnsemble`` constructors. A problem is one :class:`ExportFileError` line naming the
file and the key path (``best.json: task.label_names[1]: ...``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from miner._exportfile import (  # the format layer; re-exported here as the public API
    FORMAT,
    MAX_FILE_BYTES,
    MAX_SLOTS,
    ExportedPrompt,
    ExportFile,
    ExportFileError,
    check_fits_model,
    check_output_path,
    format_validation_error,
    is_plain_name,
    load_exported,
    predict,
    read_export_json,
    replace_dir,
    slot_counts,
    validate_export,
    write_text_atomic,
)
from miner.errors import MinerError
from miner.prompts import Prompt, PromptEnsemble

__all__ = [
    "FORMAT",
    "MAX_FILE_BYTES",
    "MAX_SLOTS",
    "ExportFile",
    "ExportFileError",
    "ExportedPrompt",
    "check_fits_model",
    "check_output_path",
    "export_best",
    "format_validation_error",
    "load_exported",
    "predict",
    "read_export_json",
    "replace_dir",
    "slot_counts",
    "soft_export_dir",
    "validate_export",
    "write_text_atomic",
]


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
    """Write the best leaderboard prompt of a task/model as JSON: each job is represented by its pick (the
    runner's pick decision, docs/selection.md), and the first of those by dev score is written.

    ``out`` is checked before the leaderboard is read, and written atomically (with the soft
    prompt's directory, when there is one): a failed export leaves no file behind.
    """
    from miner._version import code_version
    from miner.leaderboard import Leaderboard

    if out is not None:
        check_output_path(out)
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
            raise MinerError(
                f"no leaderboard rows match task={task!r} model={model!r}"
                + (f" searcher={searcher!r}" if searcher else "")
            )
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
        out = Path(out)
        d = exported.to_dict()
        if exported.prompt.soft is not None:
            # The tensor lives in the run's artifact store: copy it out beside the JSON, with a
            # PEFT prompt-tuning adapter where the layout allows one.
            from miner.artifacts import artifacts_for_storage
            from miner.soft_export import export_soft

            soft_dir = out.with_suffix("")
            if soft_dir == out:
                raise ExportFileError(
                    f"cannot export a soft prompt to {str(out)!r}: give -o a file name with an extension "
                    f"(e.g. {out.name}.json), the tensor goes into the directory of the same name without it"
                )
            store = artifacts_for_storage(storage, cfg.get("artifacts"))
            export_soft(exported, store, soft_dir)
            d["soft_export"] = soft_dir.name
        write_text_atomic(out, json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    return exported


# --------------------------------------------------------------------------- output paths
def soft_export_dir(path: str | Path) -> Path | None:
    """The soft-prompt export directory a ``miner export`` file names (``soft_export``), if it is one.

    Never raises: a file that is not readable, or a bad ``soft_export`` value, gives ``None``
    (``load_exported`` then reports what is wrong with the file).
    """
    from miner.soft_export import is_soft_export

    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > MAX_FILE_BYTES:
            return None
        ref = json.loads(p.read_text(encoding="utf-8")).get("soft_export")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not is_plain_name(ref):
        return None
    d = p.parent / ref
    return d if is_soft_export(d) else None


# --------------------------------------------------------------------------- predict

"""``soft``: prompt tuning (Lester et al. 2021) and P-tuning (Liu et al. 2021) on the frozen model.

N trainable vectors sit in the input-embedding space at the template's ``{soft:N}`` slots
(default: at the very start, the layout PEFT's prompt tuning uses, so the result exports as
a PEFT adapter). They are optimised with AdamW against the label log-probability the
scorer computes (``Scorer.label_logprobs`` with ``soft_embeds``, differentiable, model
frozen): by default the cross-entropy over the labels (the quantity behind the
leaderboard's dev log-likelihood), or the plain LM likelihood of the gold words.

Every ``eval_every`` steps the current soft prompt is stored in the artifact store and
proposed through ``evaluate`` (a leaderboard row: train/dev score, the tensor's reference,
its nearest vocabulary tokens); early stopping watches those dev scores. After training, the
best soft prompt's nearest discrete prompt is scored too. Evaluating periodically rather than
every step keeps the budget for training.

State for resuming sits under the artifact directory, keyed by the job key, written after
each evaluation (so it matches what the leaderboard holds): a killed ``miner run --resume``
continues from the last evaluation with identical results.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Annotated, Any, cast
from typing import Literal as Lit

import pydantic
import torch
from pydantic import Field

from miner.errors import ConfigError
from miner.search._base import Capabilities, Evaluate, SearchContext, Searcher
from miner.search._registry import register_searcher
from miner.search._soft_common import (
    Recorded,
    autocast,
    build_layout,
    can_afford,
    check_init_text,
    check_template,
    checkpoint_dir,
    eval_passes,
    initial_embeddings,
    record_projection,
    record_soft,
)

CKPT_NAME = "state.pt"


class SoftEncoder(torch.nn.Module):
    """The trainable soft prompt, optionally reparameterised (P-tuning).

    With ``mlp`` or ``lstm`` the prompt is ``base + head(body(base))`` with the head's last
    layer initialised to zero, so step 0 starts exactly at the chosen initialisation (plain
    P-tuning replaces the embeddings by the encoder's output, which throws the text or
    vocabulary initialisation away).
    """

    def __init__(self, init: torch.Tensor, kind: str = "none", hidden: int = 256) -> None:
        super().__init__()
        self.kind = kind
        self.base = torch.nn.Parameter(init.clone())
        dim = init.shape[1]
        if kind == "lstm":
            self.lstm = torch.nn.LSTM(dim, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
        if kind in ("mlp", "lstm"):
            first = hidden if kind == "lstm" else dim
            self.head = torch.nn.Sequential(
                torch.nn.Linear(first, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim)
            )
            out = cast(torch.nn.Linear, self.head[2])  # Sequential indexing is typed as a bare Module
            torch.nn.init.zeros_(out.weight)
            torch.nn.init.zeros_(out.bias)

    def forward(self) -> torch.Tensor:
        if self.kind == "none":
            return self.base
        x = self.lstm(self.base[None])[0][0] if self.kind == "lstm" else self.base
        return self.base + self.head(x)


def lr_factor(step: int, steps: int, warmup: float, schedule: str) -> float:
    """Multiplier of the learning rate at ``step`` (0-based): linear warm-up, then decay."""
    n_warm = int(warmup * steps)
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    frac = (step - n_warm) / max(1, steps - n_warm)
    return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else max(0.0, 1.0 - frac)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Examples of ``step``: a seeded shuffle per epoch, a function of the step alone (resumable)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return perm[j * batch_size : (j + 1) * batch_size]


@register_searcher
@dataclass
class SoftSearcher(Searcher):
    """Gradient-trained soft prompt (prompt tuning / P-tuning) on the frozen model."""

    name = "soft"
    summary = "continuous soft prompt trained by gradient on the frozen model (prompt tuning / P-tuning)"
    capabilities = Capabilities(needs_gradients=True, prompt_kind="soft")

    n_tokens: Annotated[int, Field(ge=1, description="virtual tokens (used when template is not given)")] = 8
    template: Annotated[
        str | None,
        Field(
            description="template with {soft:N} slots; default '{soft:N}' + the first seed prompt's template"
        ),
    ] = None
    verbalizer: Annotated[
        dict[str, list[str] | str] | None,
        Field(description="label -> answer words; default: the first seed prompt's, else the label names"),
    ] = None
    init: Annotated[
        Lit["vocab", "text", "random"],
        Field(
            description="starting point: tokens sampled from the 5,000 most common, init_text's embeddings (repeated or "
            "cut to N), or random at the embedding scale"
        ),
    ] = "vocab"
    init_text: Annotated[
        str, Field(description="text whose embeddings start the soft prompt (init: text)")
    ] = "Read the text and choose the best answer."
    reparam: Annotated[
        Lit["none", "mlp", "lstm"],
        Field(
            description="P-tuning encoder: none (train the vectors themselves), mlp or lstm (vectors + a "
            "zero-initialised head)"
        ),
    ] = "none"
    reparam_hidden: Annotated[
        int, Field(ge=1, description="hidden size of the P-tuning encoder (even for lstm)")
    ] = 256
    steps: Annotated[int, Field(ge=1, description="optimiser steps, at most")] = 100
    batch_size: Annotated[int, Field(ge=1, description="training examples per step")] = 8
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False, description="AdamW peak learning rate")] = 1e-2
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False, description="AdamW weight decay")] = 0.0
    warmup: Annotated[
        float, Field(allow_inf_nan=False, description="fraction of steps with linear warm-up")
    ] = 0.1
    schedule: Annotated[
        Lit["linear", "cosine", "constant"],
        Field(description="learning rate after the warm-up: linear or cosine decay to 0, or constant"),
    ] = "linear"
    max_grad_norm: Annotated[
        float | None, Field(allow_inf_nan=False, description="gradient clipping norm (0 or null: off)")
    ] = 1.0
    loss: Annotated[
        Lit["ce", "lm"], Field(description="ce: cross-entropy over the labels; lm: -log P(gold words)")
    ] = "ce"
    eval_every: Annotated[
        int, Field(ge=1, description="steps between evaluations (dev score, leaderboard row)")
    ] = 10
    eval_init: Annotated[
        bool, Field(description="also evaluate the initialisation (a baseline row) before the first step")
    ] = True
    patience: Annotated[
        int, Field(description="evaluations without dev improvement before stopping (0: never)")
    ] = 4
    mixed_precision: Annotated[
        bool, Field(description="bfloat16 autocast for the training steps on a GPU")
    ] = True
    checkpoints: Annotated[
        bool,
        Field(
            description="keep resumable state under <artifacts>/checkpoints/ (miner run --resume continues it)"
        ),
    ] = True
    project: Annotated[
        bool, Field(description="also score the nearest discrete prompt of the best soft prompt")
    ] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_template(self.template)
        if self.reparam == "lstm" and self.reparam_hidden % 2:
            # a bidirectional LSTM of reparam_hidden / 2 per direction feeds a head of width reparam_hidden
            raise ConfigError(
                f"soft.reparam_hidden must be even with reparam: lstm, got {self.reparam_hidden}"
            )

    def validate(self, context: SearchContext) -> None:
        layout = build_layout(context, self.template, self.n_tokens, self.verbalizer)
        context.scorer.compile(layout)
        check_init_text(context.backend, self.init, self.init_text, "soft.")

    # ------------------------------------------------------------------ search
    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        be, scorer, log = context.backend, context.scorer, context.logger
        layout = build_layout(context, self.template, self.n_tokens, self.verbalizer)
        train = list(context.task.train)
        if not train:
            log.warning("soft: no training examples; nothing to train")
            return
        gen = torch.Generator().manual_seed(context.seed)
        init = initial_embeddings(be, layout.parsed.n_soft, self.init, self.init_text, gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            encoder = SoftEncoder(init.cpu(), self.reparam, self.reparam_hidden).to(be.device)
        opt = torch.optim.AdamW(encoder.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gold_all = torch.tensor([e.label for e in train])

        ckdir = checkpoint_dir(context, self.name) if self.checkpoints else None
        state = self._resume(context, ckdir, encoder, opt, layout)
        step, bad, best_ref, stopped = state["step"], state["bad"], state["best_ref"], state["stopped"]
        best_step = state["best_step"]
        best: Recorded | None = None
        if best_ref is not None:  # re-proposed: a duplicate of the resumed row, no new cost
            best = record_soft(
                context,
                evaluate,
                layout,
                state["best_tensor"],
                {"searcher": self.name},
                {"step": state["best_step"]},
            )
            log.info("soft: resumed at step %d (best so far from step %d)", step, state["best_step"])

        per_eval = eval_passes(scorer, layout, context.task)
        reserved = 2 if self.project else 1  # evaluations kept for the final state and the projection
        reserve = per_eval * reserved
        last_eval_step = step if best_ref is not None else -1
        loss_value = state.get("loss")

        def evaluate_now() -> None:
            nonlocal best, best_step, bad, last_eval_step
            with torch.no_grad(), autocast(be, self.mixed_precision):
                tensor = encoder().float()
            rec = record_soft(
                context,
                evaluate,
                layout,
                tensor,
                {"searcher": self.name, "step": step},
                {
                    "step": step,
                    "train_loss": loss_value,
                    "lr": self.lr,
                    "init": self.init,
                    "reparam": self.reparam,
                },
            )
            last_eval_step = step
            dev = rec.evaluation.dev
            log.info(
                "soft: step %d: train loss %s, dev %s",
                step,
                "-" if loss_value is None else f"{loss_value:.4f}",
                "-" if dev is None else f"{100 * dev.score:.1f} (loglik {dev.loglik:.3f})",
            )
            if best is None or rec.evaluation.rank_key > best.evaluation.rank_key:
                best, best_step, bad = rec, step, 0
            else:
                bad += 1
            self._save(ckdir, encoder, opt, step, bad, best, best_step, stopped, loss_value)

        if last_eval_step < 0 and not stopped and self.eval_init:
            evaluate_now()  # the initialisation itself: a baseline row, and at least one evaluation
        while not stopped and step < self.steps:
            if self.patience and bad >= self.patience:
                stopped = f"early stopping: no dev improvement in {self.patience} evaluations"
                break
            idx = batch_indices(step, len(train), self.batch_size, context.seed)
            batch = [train[i] for i in idx]
            # A step is started only when it, a periodic evaluation and the reserved ones can all be paid for.
            if not can_afford(
                context,
                forward_passes=scorer.plan(layout, batch) + reserve,
                backward_passes=1,
                evaluations=reserved + 1,
            ):
                stopped = "budget"
                break
            t0 = time.perf_counter()
            with autocast(be, self.mixed_precision):
                raw = scorer.label_logprobs(layout, batch, soft_embeds=encoder())
            loss = _loss(raw.float(), gold_all[idx].to(raw.device), self.loss)
            if not torch.isfinite(loss):
                stopped = f"non-finite loss ({float(loss.detach())}) at step {step}"
                where = f"; checkpoint {ckdir / CKPT_NAME}" if ckdir else ""
                kept = (
                    f"dev {best.evaluation.dev.score:.3f}, {best.ref}"
                    if best and best.evaluation.dev
                    else "none"
                )
                log.error(
                    "soft: training loss became %s at step %d (lr %g); stopping and keeping the best soft prompt (%s)%s",
                    float(loss.detach()),
                    step,
                    self.lr,
                    kept,
                    where,
                )
                self._save(ckdir, None, None, step, bad, best, best_step, stopped, loss_value)
                break
            with scorer.counter.backward():
                loss.backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(encoder.parameters(), self.max_grad_norm)
            for group in opt.param_groups:
                group["lr"] = self.lr * lr_factor(step, self.steps, self.warmup, self.schedule)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            loss_value = float(loss.detach())
            log.debug("soft: step %d loss %.4f (%.2fs)", step, loss_value, time.perf_counter() - t0)
            if step % self.eval_every == 0:
                evaluate_now()
        if step != last_eval_step and not (stopped or "").startswith("non-finite"):
            if can_afford(context, forward_passes=per_eval, evaluations=1):
                evaluate_now()  # the last state, unless just evaluated
        if stopped:
            log.info("soft: stopped at step %d: %s", step, stopped)
            self._save(
                ckdir,
                encoder if not stopped.startswith("non-finite") else None,
                opt,
                step,
                bad,
                best,
                best_step,
                stopped,
                loss_value,
            )
        if self.project and best is not None:
            record_projection(context, evaluate, layout, best, self.name)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, context: SearchContext, ckdir, encoder, opt, layout) -> dict[str, Any]:
        """The checkpointed state, or a fresh start (with a warning) when the checkpoint is unusable.

        Training is a function of the seed and the step alone, so starting over re-proposes the
        same soft prompts: the resumed rows come back as duplicates and the result is unchanged;
        only the time the checkpoint would have saved is lost. A checkpoint is only trusted once
        it has passed every check, so a corrupt one never reaches the encoder or a stored row.
        """
        fresh = {
            "step": 0,
            "bad": 0,
            "best_ref": None,
            "best_step": 0,
            "stopped": None,
            "loss": None,
            "best_tensor": None,
        }
        path = ckdir / CKPT_NAME if ckdir else None
        # Only continue when the runner resumed this job's rows too (``--resume``): a fresh run
        # with the same config must train afresh, not reuse an old state.
        resumed_rows = context.budget is not None and context.budget.evaluations > 0
        if path is None or not path.is_file() or not resumed_rows:
            return fresh
        try:
            state = self._checked_state(context, path, encoder, opt, layout)
        except _BadCheckpoint as exc:
            context.logger.warning("soft: ignoring checkpoint %s (%s); starting over", path, exc)
            return fresh
        return {**fresh, **state}

    def _checked_state(self, context: SearchContext, path, encoder, opt, layout) -> dict[str, Any]:
        ck = _read_checkpoint(path)
        try:
            st = _CheckpointState.model_validate({k: ck[k] for k in _CheckpointState.model_fields if k in ck})
        except pydantic.ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise _BadCheckpoint(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if st.step > self.steps or st.best_step > st.step:
            raise _BadCheckpoint(
                f"step {st.step} (best {st.best_step}) does not fit a {self.steps}-step training"
            )
        best_tensor = None
        if st.best_ref is not None:
            best_tensor = self._stored_best(context, st.best_ref, layout, encoder)
        enc_state, opt_state = ck.get("encoder"), ck.get("optimizer")
        if enc_state is not None:
            _check_encoder_state(enc_state, encoder)
            before_enc = {k: v.clone() for k, v in encoder.state_dict().items()}
            before_opt = copy.deepcopy(opt.state_dict())
            try:
                encoder.load_state_dict(enc_state)
                opt.load_state_dict(opt_state)
                _check_optimizer_state(opt, before_opt["param_groups"])
            except (RuntimeError, ValueError, KeyError, TypeError, _BadCheckpoint) as exc:
                encoder.load_state_dict(before_enc)
                opt.load_state_dict(before_opt)
                raise _BadCheckpoint(
                    f"optimizer state does not fit the soft prompt ({type(exc).__name__}: {exc})"
                ) from None
        return {**st.model_dump(), "best_tensor": best_tensor}

    @staticmethod
    def _stored_best(context: SearchContext, ref: str, layout, encoder) -> torch.Tensor:
        from safetensors import SafetensorError

        from miner.errors import MinerError

        if context.artifacts is None:
            raise _BadCheckpoint("there is no artifact store to read its best soft prompt from")
        try:
            tensor = context.artifacts.get_tensor(ref)
        except (MinerError, SafetensorError, OSError, KeyError) as exc:
            raise _BadCheckpoint(f"its best soft prompt {ref} cannot be read: {exc}") from None
        want = (layout.parsed.n_soft, int(encoder.base.shape[1]))
        if tuple(tensor.shape) != want or not tensor.dtype.is_floating_point:
            raise _BadCheckpoint(
                f"its best soft prompt {ref} has shape {tuple(tensor.shape)}, this layout needs {want}"
            )
        return tensor

    @staticmethod
    def _save(ckdir, encoder, opt, step, bad, best: Recorded | None, best_step, stopped, loss) -> None:
        if ckdir is None:
            return
        ckdir.mkdir(parents=True, exist_ok=True)
        path = ckdir / CKPT_NAME
        state: dict[str, Any] = {}
        prev = None
        if encoder is None and path.is_file():  # keep the last good weights (after a NaN)
            try:
                prev = _read_checkpoint(path)
            except _BadCheckpoint:
                prev = None  # unreadable: the state below records no weights
        if encoder is None and prev is not None:
            state.update(
                encoder=prev.get("encoder"), optimizer=prev.get("optimizer"), step=prev.get("step", step)
            )
        else:
            state.update(
                encoder=encoder.state_dict() if encoder else None,
                optimizer=opt.state_dict() if opt else None,
                step=step,
            )
        state.update(
            bad=bad, best_ref=best.ref if best else None, best_step=best_step, stopped=stopped, loss=loss
        )
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=ckdir)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class _BadCheckpoint(Exception):
    """A checkpoint that cannot be trusted (internal: the searcher warns and starts over)."""


NonNegative = Annotated[int, pydantic.Field(ge=0)]


class _CheckpointState(pydantic.BaseModel):
    """The scalar part of ``state.pt`` (weights are checked against the encoder itself)."""

    model_config = pydantic.ConfigDict(strict=True)

    step: NonNegative = 0
    bad: NonNegative = 0
    best_ref: Annotated[str, pydantic.StringConstraints(pattern=r"^soft:[A-Za-z0-9]+$")] | None = None
    best_step: NonNegative = 0
    stopped: str | None = None
    loss: float | None = None


def _read_checkpoint(path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load has no error contract: garbage fails in a dozen ways
        raise _BadCheckpoint(f"unreadable: {type(exc).__name__}: {str(exc).strip()[:120]}") from None
    if not isinstance(ck, dict):
        raise _BadCheckpoint(f"holds a {type(ck).__name__}, not a state dictionary")
    return ck


def _check_encoder_state(state: Any, encoder: SoftEncoder) -> None:
    own = encoder.state_dict()
    if not isinstance(state, dict) or set(state) != set(own):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise _BadCheckpoint(f"encoder weights {keys} are not this encoder's {sorted(own)}")
    for k, v in own.items():
        t = state[k]
        if not isinstance(t, torch.Tensor) or t.shape != v.shape or not t.dtype.is_floating_point:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise _BadCheckpoint(f"encoder weight {k!r} is {got}, this encoder needs {tuple(v.shape)}")


def _check_optimizer_state(opt: torch.optim.Optimizer, fresh_groups: list[dict[str, Any]]) -> None:
    """AdamW's settings and moments must be what a fresh one has, or the first step fails mid-training."""
    for group, fresh in zip(opt.param_groups, fresh_groups):
        for key, want in fresh.items():
            if key != "params" and not _same_kind(group.get(key), want):
                raise _BadCheckpoint(f"optimizer setting {key}={group.get(key)!r} is not like {want!r}")
        for p in group["params"]:
            for name, value in opt.state.get(p, {}).items():
                if name != "step" and (not isinstance(value, torch.Tensor) or value.shape != p.shape):
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise _BadCheckpoint(
                        f"optimizer {name} is {got} for a parameter of shape {tuple(p.shape)}"
                    )


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(b, tuple):
        return isinstance(a, tuple) and len(a) == len(b) and all(_same_kind(x, y) for x, y in zip(a, b))
    if isinstance(b, bool) or b is None:
        return type(a) is type(b)
    if isinstance(b, (int, float)):
        return isinstance(a, (int, float)) and not isinstance(a, bool)
    return type(a) is type(b)


def _loss(raw: torch.Tensor, gold: torch.Tensor, kind: str) -> torch.Tensor:
    rows = torch.arange(len(gold), device=raw.device)
    if kind == "lm":
        return -raw[rows, gold].mean()
    return -torch.log_softmax(raw, dim=-1)[rows, gold].mean()

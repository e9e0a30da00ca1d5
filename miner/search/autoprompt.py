"""``autoprompt``: gradient-guided discrete trigger search (AutoPrompt, Shin et al. 2020), batched.

Each step:

1. gradient of the loss w.r.t. the trigger *embeddings* on a training batch (the frozen
   model gets no parameter gradients);
2. HotFlip scores ``-(E . g)`` over a filtered vocabulary, top-k tokens per position;
3. ``n_candidates`` single swaps sampled across all positions (as GCG does, instead of
   AutoPrompt's one random position per step), each checked to survive decode/re-encode;
4. the current trigger and all candidates scored on a *fresh* training batch in a few
   batched passes (KV-cached text prefix on causal LMs);
5. the best candidate replaces the current trigger if it raises the summed gold
   log-probability (a smooth objective: accuracy on a small batch ties constantly), by default
   normalised over the labels (``objective: label``; ``vocab`` is AutoPrompt's unnormalised loss).

The dev set is scored through ``evaluate`` every ``eval_every`` steps (not after every
swap); the search stops after ``patience`` evaluations without a better dev score. The
runner keeps every evaluated trigger on the leaderboard and picks the best by dev score.
Label-word search is left to the ``optuna`` searcher, which does it from cached answer
distributions; here the verbalizer is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from miner.errors import ConfigError
from miner.prompts import Prompt, Verbalizer
from miner.scoring import Scorer, TriggerScorer
from miner.search._base import Capabilities, Evaluate, Evaluation, SearchContext, Searcher
from miner.search._hotflip import (
    allowed_tokens,
    candidate_objectives,
    hotflip_topk,
    objective_gradient,
    round_trips,
    sample_candidates,
)
from miner.search._registry import register_searcher


@register_searcher
@dataclass
class AutoPromptSearcher(Searcher):
    """Gradient-guided search for trigger tokens in a template with ``{trigger:N}`` slots."""

    name = "autoprompt"
    summary = (
        "gradient-guided trigger-token search (HotFlip + GCG-style sampling, batched, KV-cached re-scoring)"
    )
    capabilities = Capabilities(needs_gradients=True)

    template: Annotated[
        str | None,
        Field(
            description="template with {trigger:N} slots; default "
            "'<text fields> {trigger:n_triggers} {answer}'"
        ),
    ] = None
    n_triggers: Annotated[int, Field(ge=1, description="trigger tokens of the default template")] = 5
    verbalizer: Annotated[
        dict[str, list[str] | str] | None,
        Field(
            description="label -> answer words; default: the config's first prompt's, else the label names"
        ),
    ] = None
    init: Annotated[
        str,
        Field(description="initial triggers: 'random', one token (repeated), or a text of exactly N tokens"),
    ] = " the"
    steps: Annotated[int, Field(ge=0, description="search iterations, at most")] = 40
    batch_size: Annotated[
        int, Field(ge=1, description="training examples per gradient step and per candidate re-scoring")
    ] = 16
    top_k: Annotated[int, Field(ge=1, description="HotFlip tokens kept per trigger position")] = 32
    n_candidates: Annotated[int, Field(ge=1, description="single-swap candidates re-scored per step")] = 32
    objective: Annotated[
        Literal["vocab", "label"],
        Field(
            description="label: log p(gold words) normalised over the labels (the classifier's log-likelihood); "
            "vocab: over the whole vocabulary (AutoPrompt's loss), which also rewards triggers that "
            "make every label word likely (see results/archive/autoprompt_bench*.md)"
        ),
    ] = "label"
    words_only: Annotated[bool, Field(description="trigger tokens must decode to alphabetic words")] = True
    allow_capitalized: Annotated[bool, Field(description="let capitalised words become triggers")] = False
    exclude_tokens: Annotated[list[str], Field(description="words that may not become triggers")] = field(
        default_factory=list
    )
    eval_every: Annotated[
        int,
        Field(
            ge=1,
            description="steps between dev evaluations (only when the trigger "
            "changed; one reuses the dev texts' key/value cache)",
        ),
    ] = 2
    patience: Annotated[
        int, Field(ge=0, description="dev evaluations without improvement before stopping (0: never)")
    ] = 8
    kv_cache: Annotated[
        bool, Field(description="reuse the example text's key/value cache across candidates (causal LMs)")
    ] = True
    screen_dtype: Annotated[
        Literal["auto", "model", "float32", "bfloat16", "float16"],
        Field(
            description="dtype of the model copy that computes the gradient and re-scores candidates; dev scores "
            "(every leaderboard number) use the model as loaded. auto: bfloat16 on a CPU with native "
            "bfloat16 instructions (AVX512-BF16, AMX), else the model's own dtype"
        ),
    ] = "auto"

    # ------------------------------------------------------------------ setup
    def initial_prompt(self, context: SearchContext, rng: np.random.Generator | None = None) -> Prompt:
        """The template with its verbalizer and the initial trigger tokens."""
        labels = context.label_names
        template = self.template or (
            " ".join("{" + f + "}" for f in context.text_fields)
            + f" {{trigger:{self.n_triggers}}} {{answer}}"
        )
        if self.verbalizer is not None:
            verb = Verbalizer.from_mapping(self.verbalizer, labels)
        elif context.prompts:
            verb = context.prompts[0].verbalizer
        else:
            verb = Verbalizer.from_mapping({lab: [lab] for lab in labels}, labels)
        probe = Prompt(template=template, verbalizer=verb, triggers=(0,) * _count_triggers(template))
        probe.parsed.check_fields(context.text_fields)
        n = len(probe.triggers)
        if n == 0:
            raise ConfigError(f"autoprompt.template {template!r} has no {{trigger}} slot")
        be = context.backend
        if self.init == "random":
            allowed = np.flatnonzero(self.allowed_tokens(be, probe).numpy())
            rng = rng or np.random.default_rng(context.seed)
            ids = tuple(int(i) for i in rng.choice(allowed, size=n))
        else:
            toks = be.tokenize(self.init)
            if len(toks) == 1:
                ids = toks * n
            elif len(toks) == n:
                ids = toks
            else:
                raise ConfigError(
                    f"autoprompt.init {self.init!r} is {len(toks)} tokens; give one token or exactly {n}"
                )
        if not round_trips(be, ids):
            context.logger.warning("initial trigger %r does not survive decode/re-encode", be.decode(ids))
        return probe.with_(triggers=tuple(ids), meta={"trigger_text": be.decode(ids)})

    def screen_backend(self, backend):
        """The backend the gradient and the candidate re-scoring run on (see ``screen_dtype``)."""
        import torch

        from miner.models import cpu_has_native_bf16

        name = self.screen_dtype
        if name == "model":
            return backend
        if name == "auto":
            if backend.device.type != "cpu" or backend.dtype != torch.float32 or not cpu_has_native_bf16():
                return backend
            name = "bfloat16"
        if name == "float16" and backend.device.type == "cpu":
            raise ConfigError(
                "autoprompt.screen_dtype float16 is for GPUs (slow or unsupported on a CPU); use bfloat16"
            )
        return backend.as_dtype(getattr(torch, name))

    def allowed_tokens(self, backend, prompt: Prompt):
        """Boolean mask ``[V]`` of the tokens this searcher's triggers may use (its vocabulary filter)."""
        exclude = [t for w in self.exclude_tokens for v in (w, " " + w) for t in backend.tokenize(v)]
        return allowed_tokens(
            backend,
            prompt,
            words_only=self.words_only,
            allow_capitalized=self.allow_capitalized,
            exclude=exclude,
        )

    # ------------------------------------------------------------------ search
    def validate(self, context: SearchContext) -> None:
        prompt = self.initial_prompt(context)
        context.scorer.compile(prompt)
        if self.screen_dtype == "float16" and context.backend.device.type == "cpu":
            self.screen_backend(context.backend)  # raises the CPU error without building a copy

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        be, scorer, log, budget = context.backend, context.scorer, context.logger, context.budget
        rng = np.random.default_rng(context.seed)
        current = self.initial_prompt(context, rng)
        allowed = self.allowed_tokens(be, current)
        embeddings = be.input_embeddings()
        screen = self.screen_backend(be)
        if screen is not be:
            log.info(
                "autoprompt: gradient and candidates in %s, dev evaluations in %s", screen.dtype, be.dtype
            )
            scorer = Scorer(
                screen,
                batch_size=scorer.batch_size,
                max_batch_tokens=scorer.max_batch_tokens,
                stem_cache_mb=scorer.stem_cache_mb,
                progress=False,
                counter=scorer.counter,
            )  # charged to the job like every pass
        screen_name = str(screen.dtype).replace("torch.", "")  # recorded with every dev evaluation
        cand_scorer = TriggerScorer(scorer, current, kv_cache=self.kv_cache)
        batches = _BatchStream(list(context.task.train), self.batch_size, rng)

        state: dict[str, Any] = {"best": None, "stale": 0, "evaluated": None}

        def dev_eval(prompt: Prompt, step: int, objective: float | None) -> Evaluation:
            ev = evaluate(
                [prompt],
                extra={
                    "step": step,
                    "train_objective": objective,
                    "screen_dtype": screen_name,
                    "trigger_text": prompt.meta.get("trigger_text"),
                },
            )[0]
            state["evaluated"] = prompt.triggers
            best = state["best"]
            if best is None or ev.rank_key > best.rank_key:
                state["best"], state["stale"] = ev, 0
            else:
                state["stale"] += 1
            return ev

        dev_eval(current, 0, None)
        if not context.task.train:
            log.info("autoprompt: no training examples; only the initial trigger was evaluated")
            return
        bar = tqdm(range(1, self.steps + 1), desc="autoprompt", disable=not context.progress, leave=False)
        accepted = 0
        objective = None
        done = 0  # steps completed (the last dev evaluation is labelled with it)
        for step in bar:
            grad_batch, cand_batch = batches.next(), batches.next()
            # planned before the step (the candidates are not drawn yet: an upper bound), so that the
            # search stops before a step it could not finish rather than inside it
            need = cand_scorer.plan_gradient(grad_batch) + cand_scorer.plan(self.n_candidates + 1, cand_batch)
            if budget is not None and not budget.can_afford(forward_passes=need, backward_passes=1):
                log.info("autoprompt: budget left cannot pay for step %d; stopping", step)
                break
            grad, loss = objective_gradient(cand_scorer, current.triggers, grad_batch, self.objective)
            topk = hotflip_topk(grad, embeddings, allowed, self.top_k)
            cands = sample_candidates(current.triggers, topk, self.n_candidates, rng, be)
            if not cands:
                log.info("autoprompt: no valid candidate at step %d; stopping", step)
                break
            scores = candidate_objectives(cand_scorer, [current.triggers] + cands, cand_batch, self.objective)
            done = step
            objective = float(scores[0])
            j = int(np.argmax(scores[1:]))
            if scores[1 + j] > scores[0]:
                accepted += 1
                objective = float(scores[1 + j])
                current = current.with_(triggers=cands[j], meta={"trigger_text": be.decode(cands[j])})
            if step % self.eval_every == 0 and current.triggers != state["evaluated"]:
                dev_eval(current, step, objective)
                if self.patience and state["stale"] >= self.patience:
                    log.info(
                        "autoprompt: no dev improvement in %d evaluations; stopping at step %d",
                        self.patience,
                        step,
                    )
                    break
            best = state["best"]
            bar.set_postfix(
                best_dev=f"{best.dev.score:.3f}" if best and best.dev else "-",
                loss=f"{loss:.3f}",
                accepted=accepted,
            )
        if current.triggers != state["evaluated"]:
            dev_eval(current, done, objective)


def _count_triggers(template: str) -> int:
    from miner.prompts import parse_template

    return parse_template(template).n_triggers


class _BatchStream:
    """Training batches drawn without replacement within a pass, reshuffled each pass (seeded)."""

    def __init__(self, items: list, size: int, rng: np.random.Generator) -> None:
        self.items, self.size, self.rng = items, min(size, len(items)), rng
        self.order: list[int] = []

    def next(self) -> list:
        if len(self.order) < self.size:
            self.order += [int(i) for i in self.rng.permutation(len(self.items))]
        take, self.order = self.order[: self.size], self.order[self.size :]
        return [self.items[i] for i in take]

"""``blackbox``: Black-Box Tuning (Sun et al. 2022), forward passes only.

The soft prompt is ``p0 + A z``: ``p0`` an initial prompt (sampled vocabulary, text or
random, as for ``soft``), ``A`` a fixed random projection from a small space (``z`` of
``intrinsic_dim`` numbers) to the ``N x hidden`` soft-prompt space, and ``z`` searched by
CMA-ES (the ``cmaes`` package, which Optuna's CMA-ES sampler also uses). ``A`` is drawn with
standard deviation ``sigma_e / (sqrt(d) * sigma)`` so that ``A z`` at CMA-ES's initial step
size has the per-coordinate scale ``sigma_e`` of the model's own embeddings (BBT's recipe).

A candidate's fitness is its cross-entropy over the labels on the training examples (one
inference-mode scoring, charged as forward passes; no gradient anywhere). The best candidate
by fitness is proposed through ``evaluate`` every ``eval_every`` generations, which gives it
a leaderboard row and a dev score; the budget is counted in forward passes like everyone's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated
from typing import Literal as Lit

import numpy as np
import torch
from pydantic import Field

from miner.errors import MinerError
from miner.search._base import Capabilities, Evaluate, SearchContext, Searcher
from miner.search._registry import register_searcher
from miner.search._soft_common import (
    Recorded,
    autocast,
    build_layout,
    can_afford,
    check_template,
    eval_passes,
    initial_embeddings,
    record_projection,
    record_soft,
)


def _cma(mean: np.ndarray, sigma: float, popsize: int | None, seed: int, bound: float | None):
    try:
        from cmaes import CMA
    except ImportError:  # pragma: no cover - cmaes ships with the optuna extra
        raise MinerError("searcher 'blackbox' needs the cmaes package: pip install cmaes") from None
    bounds = None if bound is None else np.tile([-bound, bound], (len(mean), 1)).astype(float)
    return CMA(mean=mean, sigma=sigma, population_size=popsize, seed=seed, bounds=bounds)


def projection_matrix(
    n_soft: int, hidden: int, dim: int, embed_std: float, sigma: float, seed: int
) -> torch.Tensor:
    """The fixed random map ``R^dim -> R^(n_soft * hidden)`` (float32, CPU)."""
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    std = embed_std / (math.sqrt(dim) * sigma)
    return torch.randn(n_soft * hidden, dim, generator=g) * std


@register_searcher
@dataclass
class BlackboxSearcher(Searcher):
    """CMA-ES over a random low-dimensional projection of the soft prompt (BBT)."""

    name = "blackbox"
    summary = "derivative-free soft prompt: CMA-ES in a random low-dimensional projection (Black-Box Tuning)"
    capabilities = Capabilities(prompt_kind="soft")

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
            description="starting point p0: sampled vocabulary embeddings, init_text's embeddings, or random"
        ),
    ] = "vocab"
    init_text: Annotated[
        str, Field(description="text whose embeddings start the soft prompt (init: text)")
    ] = "Read the text and choose the best answer."
    intrinsic_dim: Annotated[int, Field(ge=1, description="size d of the space CMA-ES searches")] = 200
    sigma: Annotated[
        float, Field(gt=0, allow_inf_nan=False, description="CMA-ES initial step size in z space")
    ] = 1.0
    popsize: Annotated[int | None, Field(ge=2, description="CMA-ES population (default: 4 + 3 ln d)")] = None
    bound: Annotated[
        float | None,
        Field(gt=0, allow_inf_nan=False, description="box constraint on |z_i| (default: unbounded)"),
    ] = None
    generations: Annotated[int, Field(ge=1, description="CMA-ES generations, at most")] = 50
    max_fit_examples: Annotated[
        int | None,
        Field(ge=1, description="fitness on a seeded subset of train of this size (default: all of train)"),
    ] = None
    eval_every: Annotated[
        int, Field(ge=1, description="generations between evaluations of the best candidate")
    ] = 2
    mixed_precision: Annotated[
        bool, Field(description="bfloat16/float16 autocast for fitness passes on a GPU")
    ] = True
    project: Annotated[
        bool, Field(description="also score the nearest discrete prompt of the best soft prompt")
    ] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_template(self.template)

    def validate(self, context: SearchContext) -> None:
        build_layout(context, self.template, self.n_tokens, self.verbalizer)

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        be, scorer, log = context.backend, context.scorer, context.logger
        layout = build_layout(context, self.template, self.n_tokens, self.verbalizer)
        n = layout.parsed.n_soft
        gen = torch.Generator().manual_seed(context.seed)
        p0 = initial_embeddings(be, n, self.init, self.init_text, gen).cpu()
        hidden = p0.shape[1]
        embed_std = float(be.input_embeddings().detach().float().std())
        A = projection_matrix(n, hidden, self.intrinsic_dim, embed_std, self.sigma, context.seed).to(
            be.device
        )
        p0_dev = p0.to(be.device)
        fit_data = list(context.task.train)
        if self.max_fit_examples and len(fit_data) > self.max_fit_examples:
            pick = torch.randperm(len(fit_data), generator=torch.Generator().manual_seed(context.seed))[
                : self.max_fit_examples
            ]
            fit_data = [fit_data[int(i)] for i in sorted(pick.tolist())]
        if not fit_data:
            log.warning("blackbox: no training examples; nothing to search")
            return

        def soft_of(z: np.ndarray) -> torch.Tensor:
            zt = torch.as_tensor(z, dtype=torch.float32, device=be.device)
            return p0_dev + (A @ zt).view(n, hidden)

        per_eval = eval_passes(scorer, layout, context.task)
        per_candidate = scorer.plan(layout, fit_data)
        reserved = 2 if self.project else 1  # evaluations kept for the final best and its projection
        reserve = per_eval * reserved
        best: Recorded | None = None

        def propose(z: np.ndarray, generation: int, fitness: float | None) -> None:
            nonlocal best
            rec = record_soft(
                context,
                evaluate,
                layout,
                soft_of(z),
                {"searcher": self.name, "generation": generation},
                {"generation": generation, "train_fitness": fitness, "intrinsic_dim": self.intrinsic_dim},
            )
            if best is None or rec.evaluation.rank_key > best.evaluation.rank_key:
                best = rec

        zero = np.zeros(self.intrinsic_dim)
        propose(zero, 0, None)  # p0 itself: a baseline row, and at least one evaluation
        cma = _cma(zero, self.sigma, self.popsize, context.seed, self.bound)
        best_z, best_fit, proposed_fit = zero, math.inf, math.inf
        stopped = None
        for g in range(self.generations):
            # evaluations: room for this generation's proposal besides the reserved ones
            if not can_afford(
                context,
                forward_passes=per_candidate * cma.population_size + reserve,
                evaluations=reserved + 1,
            ):
                stopped = "budget"  # a generation is told to CMA-ES only when complete
                break
            solutions = []
            for _ in range(cma.population_size):
                z = cma.ask()
                with torch.inference_mode(), autocast(be, self.mixed_precision):
                    res = scorer.score(layout, fit_data, soft_embeds=soft_of(z))
                assert res.loglik is not None  # every training Example has a label
                fit = -float(res.loglik)
                if not math.isfinite(fit):
                    fit = 1e9  # a broken candidate ranks last; CMA-ES moves away from it
                solutions.append((z, fit))
                if fit < best_fit:
                    best_z, best_fit = z.copy(), fit
            cma.tell(solutions)
            log.debug("blackbox: generation %d best fitness %.4f", g + 1, best_fit)
            if (g + 1) % self.eval_every == 0 and best_fit < proposed_fit:
                propose(best_z, g + 1, best_fit)
                proposed_fit = best_fit
        if best_fit < proposed_fit and can_afford(context, forward_passes=per_eval, evaluations=1):
            propose(best_z, -1, best_fit)  # the final best, unless already proposed
        if stopped:
            log.info("blackbox: stopped: %s", stopped)
        if self.project and best is not None:
            record_projection(context, evaluate, layout, best, self.name)

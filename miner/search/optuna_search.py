"""``optuna``: template and verbalizer search driven by Optuna, with automatic label words.

Each Optuna trial picks a template (assembled from parts, or a user's full template),
calibration on/off, how many words per label, the size of the automatic label-word pool and
how the inner search ranks verbalizers. The trial then

1. gets the template's answer-slot distributions ``[N, V]`` on a growing share of the
   training data from ``context.scorer.distributions`` (forward passes, cached by the
   scorer), reporting the best verbalizer's training score at each share so the pruner
   can stop a poor template early;
2. builds the label-word pool from those distributions (LM-BFF style, real words only, plus
   the user's words) and searches *every* verbalizer combination of the pool on the
   training data as tensor operations (no model call; the count goes into the row's extra);
3. proposes the winning prompt to ``evaluate`` (the runner scores train, all cached, and dev,
   one new pass per batch) and tells Optuna ``dev score + tie_weight * exp(dev loglik)``, a
   single value that orders exactly like (dev score, dev log-likelihood) for accuracy on
   fewer than 1/tie_weight dev examples; with ``sampler: nsga2`` the objectives are
   (that value, template length in tokens) instead, without pruning.

Dev data only ranks templates (Optuna's objective); verbalizers are fitted on train. With
``demonstrations`` a trial may also put k training examples per label before the query (one
of ``demo_sets`` seeded draws); the examples shown are left out of that trial's word fitting.
``ensemble_top: k`` is an alias of the run config's ``ensemble: {top: k}``: after the study the
runner averages the job's k best candidates by its ranking rule into a :class:`PromptEnsemble`, the
searcher's pick, which then goes through the runner's guarded pick (docs/selection.md; the
ensemble was checked on validation data: ``results/optuna/optuna_ensemble.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated
from typing import Literal as Lit

from annotated_types import Gt, Le
from pydantic import Field, NonNegativeInt

from miner.errors import ConfigError
from miner.search._base import Capabilities, Evaluate, SearchContext, Searcher
from miner.search._registry import register_searcher

# The names miner.search._optuna_study knows (SAMPLERS, PRUNERS), spelled out here so that importing the
# searcher does not import Optuna; a test checks that the two agree.
SamplerName = Lit["tpe", "random", "cmaes", "nsga2"]
PrunerName = Lit["median", "successive_halving", "none"]


@register_searcher
@dataclass
class OptunaSearcher(Searcher):
    """Joint template x verbalizer search with Optuna over cached answer distributions."""

    name = "optuna"
    summary = "Optuna (TPE/random/CMA-ES/NSGA-II) over templates; label words found and searched on cached distributions"
    capabilities = Capabilities()
    post_search_params = ("ensemble_top",)  # `--resume` on a finished study adds its ensemble, no new trials
    # Label words are fitted on train (the inner verbalizer search), so train scores are optimistic.
    fits_on_train = True

    n_trials: Annotated[
        int,
        Field(
            ge=1, description="trials of the study, shared by all workers of the job (a resume continues it)"
        ),
    ] = 30
    sampler: Annotated[
        SamplerName,
        Field(description="tpe (multivariate), random, cmaes, or nsga2 (dev score against template length)"),
    ] = "tpe"
    pruner: Annotated[PrunerName, Field(description="median, successive_halving or none")] = "median"
    seed: Annotated[
        int | None, Field(ge=0, le=2**32 - 1, description="sampler seed (default: the job seed)")
    ] = None
    n_startup_trials: Annotated[
        int, Field(ge=0, description="random trials before TPE/CMA-ES model the space (and before pruning)")
    ] = 8
    train_shares: Annotated[
        list[Annotated[float, Gt(0), Le(1)]],
        Field(min_length=1, description="pruning steps: growing shares of train, ending at 1.0"),
    ] = field(default_factory=lambda: [0.5, 1.0])
    # Template parts: <prefix><text><punctuation><separator><infix> {answer}
    prefixes: Annotated[
        list[str] | None,
        Field(
            min_length=1,
            description='template parts: text before the text fields (use [""] for none); unset: the '
            "built-in generic set plus the task's first field name (docs/defaults.md)",
        ),
    ] = None
    separators: Annotated[
        list[str], Field(min_length=1, description="template parts: between the text and the infix")
    ] = field(default_factory=lambda: [" ", "\n"])
    punctuations: Annotated[
        list[str], Field(min_length=1, description='template parts: right after the text (use [""] for none)')
    ] = field(default_factory=lambda: [""])
    infixes: Annotated[
        list[str] | None,
        Field(
            description="template parts: just before {answer} (may be empty when templates are given); unset: "
            "the built-in generic set plus the task's label set spelled out (docs/defaults.md)"
        ),
    ] = None
    templates: Annotated[
        list[str], Field(description="full templates, searched next to the assembled ones")
    ] = field(default_factory=list)
    use_seed_templates: Annotated[
        bool, Field(description="the config's hand-written prompts' templates are choices too")
    ] = True
    answer_first: Annotated[
        bool, Field(description="masked LMs: also try the answer slot before the text")
    ] = True
    calibration: Annotated[
        list[bool], Field(min_length=1, description="content-free calibration choices")
    ] = field(default_factory=lambda: [False, True])
    # In-context demonstrations (LM-BFF style): k training examples per label, rendered with the
    # template and their label's first user word, are put before the query. They are fixed text
    # in the exported template, drawn from train only and left out of that trial's word fitting.
    demonstrations: Annotated[
        list[NonNegativeInt],
        Field(
            min_length=1, description="choices of training examples per label put before the query (0: none)"
        ),
    ] = field(default_factory=lambda: [0])
    demo_sets: Annotated[
        int,
        Field(
            ge=1,
            description="seeded draws of demonstrations (examples and their order) a trial chooses among",
        ),
    ] = 8
    demo_separator: Annotated[str, Field(description="between demonstrations and before the query")] = "\n\n"
    # Verbalizers
    label_words: Annotated[
        dict[str, list[str]],
        Field(
            description="label -> user words, always in the label-word pool (with the seed prompts' words); "
            "empty: words found on train, plus the label names when the job's prompts are the defaults"
        ),
    ] = field(default_factory=dict)
    max_words: Annotated[
        int, Field(ge=1, description="words per label: 1..max_words (multi-word verbalizers)")
    ] = 2
    pool_sizes: Annotated[
        list[NonNegativeInt],
        Field(
            min_length=1, description="choices of automatic candidate words per label (0: user words only)"
        ),
    ] = field(default_factory=lambda: [0, 2, 4, 8])
    likely_top: Annotated[
        int,
        Field(
            ge=0, description="per label, only the words this likely (rank by mean log-prob) are candidates"
        ),
    ] = 200
    word_pattern: Annotated[
        str, Field(description="regular expression a real word matches (vocabulary filter)")
    ] = r"^[A-Za-z]{3,}$"
    vocabulary: Annotated[
        list[str] | str | None,
        Field(description="word list (or a UTF-8 file, one word a line) that candidate words must be in"),
    ] = None
    select: Annotated[
        list[Lit["metric", "loglik"]],
        Field(
            min_length=1,
            description="choices of the inner ranking of verbalizers: metric then loglik, or loglik alone",
        ),
    ] = field(default_factory=lambda: ["metric", "loglik"])
    max_verbalizers: Annotated[
        int,
        Field(description="exhaustive inner search up to this many verbalizers; coordinate ascent beyond"),
    ] = 200_000
    tie_weight: Annotated[
        float, Field(allow_inf_nan=False, description="objective = dev score + tie_weight * exp(dev loglik)")
    ] = 1e-3
    # Ensemble: after the study, the mean of the label probabilities of its best `ensemble_top` trials
    # (distinct prompts, ranked by dev, dev log-likelihood, train) is proposed as the job's pick.
    ensemble_top: Annotated[
        int,
        Field(
            ge=0,
            description="alias of the run config's ensemble.top: the runner averages the job's best k "
            "candidates into the searcher's pick (0 or 1: no ensemble; ensemble.top, when set, wins)",
        ),
    ] = 0
    study_name: Annotated[
        str | None,
        Field(
            description="Optuna study name (default: 'miner-' + the job key, so --resume and workers find it)"
        ),
    ] = None
    # A RUNNING trial is dead after this long without a heartbeat (written every grace/4 s by its
    # worker, whatever the length of a step); its parameters are then re-run. At least 3: SQLite
    # dates heartbeats in whole seconds.
    heartbeat_grace_s: Annotated[
        float,
        Field(
            ge=3,
            allow_inf_nan=False,
            description=(
                "seconds without a heartbeat after which a running trial's worker is dead and its parameters "
                "are re-run"
            ),
        ),
    ] = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        shares = list(self.train_shares)
        if sorted(shares) != shares or shares[-1] != 1.0:
            raise ConfigError(f"optuna searcher: train_shares must increase and end at 1.0, got {shares}")
        try:
            re.compile(self.word_pattern)
        except re.error as exc:
            raise ConfigError(
                f"optuna searcher: word_pattern is not a valid regular expression: {exc}"
            ) from None

    def ensemble_request(self) -> int:
        return self.ensemble_top if self.ensemble_top >= 2 else 0

    def validate(self, context: SearchContext) -> None:
        from miner.search._optuna_run import check_job

        check_job(self, context)

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        from miner.search._optuna_run import run_study

        run_study(self, context, evaluate)

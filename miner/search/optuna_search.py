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
With ``ensemble_top: k`` the study's k best trials are averaged into a :class:`PromptEnsemble`
that is proposed last and marked as the job's pick (``extra["pick"]``), chosen over the best
single trial by dev (checked on validation data: ``results/optuna_ensemble.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from miner.errors import ConfigError
from miner.search._base import Capabilities, Evaluate, SearchContext, Searcher
from miner.search._registry import register_searcher


@register_searcher
@dataclass
class OptunaSearcher(Searcher):
    """Joint template x verbalizer search with Optuna over cached answer distributions."""

    name = "optuna"
    summary = "Optuna (TPE/random/CMA-ES/NSGA-II) over templates; label words found and searched on cached distributions"
    capabilities = Capabilities()
    post_search_params = ("ensemble_top",)  # `--resume` on a finished study adds its ensemble, no new trials

    n_trials: int = 30  # trials of the study (shared by all workers of the job; a resume continues it)
    sampler: str = "tpe"  # tpe (multivariate) | random | cmaes | nsga2 (dev score vs template length)
    pruner: str = "median"  # median | successive_halving | none
    seed: int | None = None  # sampler seed; default: the job seed
    n_startup_trials: int = 8  # random trials before TPE/CMA-ES model the space (and before pruning)
    train_shares: list[float] = field(default_factory=lambda: [0.5, 1.0])  # pruning steps (growing share of train)
    # Template parts: <prefix><text><punctuation><separator><infix> {answer}
    prefixes: list[str] = field(default_factory=lambda: ["", "Review: ", "Text: "])
    separators: list[str] = field(default_factory=lambda: [" ", "\n"])
    punctuations: list[str] = field(default_factory=lambda: [""])
    infixes: list[str] = field(default_factory=lambda: [
        "It was", "Sentiment:", "Overall, it was", "In summary, it was", "Answer:", "The sentiment is", "All in all, it was",
    ])
    templates: list[str] = field(default_factory=list)  # full templates, searched next to the assembled ones
    use_seed_templates: bool = True  # the config's hand-written prompts' templates are choices too
    answer_first: bool = True  # masked LMs: also try the answer slot before the text
    calibration: list[bool] = field(default_factory=lambda: [False, True])  # content-free calibration choices
    # In-context demonstrations (LM-BFF style): k training examples per label, rendered with the
    # template and their label's first user word, are put before the query. They are fixed text
    # in the exported template, drawn from train only and left out of that trial's word fitting.
    demonstrations: list[int] = field(default_factory=lambda: [0])  # demonstrations per label (choices)
    demo_sets: int = 8  # seeded draws (examples and their order) a trial chooses among
    demo_separator: str = "\n\n"  # between demonstrations and before the query
    # Verbalizers
    label_words: dict[str, list[str]] = field(default_factory=dict)  # user words, always in the pool
    max_words: int = 2  # words per label: 1..max_words (multi-word verbalizers)
    pool_sizes: list[int] = field(default_factory=lambda: [0, 2, 4, 8])  # automatic candidates per label (0: user words only)
    likely_top: int = 200  # per label, only the words this likely (rank by mean log-prob) are candidates
    word_pattern: str = r"^[A-Za-z]{3,}$"  # vocabulary filter: what counts as a real word
    vocabulary: list[str] | str | None = None  # optional word list (or a file, one word a line) candidates must be in
    select: list[str] = field(default_factory=lambda: ["metric", "loglik"])  # inner ranking of verbalizers
    max_verbalizers: int = 200_000  # exhaustive inner search up to this many; coordinate ascent beyond
    tie_weight: float = 1e-3  # objective = dev score + tie_weight * exp(dev loglik)
    # Ensemble: after the study, the mean of the label probabilities of its best `ensemble_top` trials
    # (distinct prompts, ranked by dev, dev log-likelihood, train) is proposed as the job's pick.
    ensemble_top: int = 0  # 0 or 1: no ensemble, the job's pick is its best trial by dev
    study_name: str | None = None  # default: "miner-" + job key (so --resume and workers find it)
    # A RUNNING trial is dead after this long without a heartbeat (written every grace/4 s by its
    # worker, whatever the length of a step); its parameters are then re-run. At least 3: SQLite
    # dates heartbeats in whole seconds.
    heartbeat_grace_s: float = 60.0

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        from miner.search._optuna_run import run_study

        self._check()
        run_study(self, context, evaluate)

    def _check(self) -> None:
        from miner.search._optuna_study import PRUNERS, SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"optuna searcher: unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"optuna searcher: unknown pruner {self.pruner!r}; known: {', '.join(PRUNERS)}")
        if self.n_trials < 1 or self.max_words < 1 or not self.pool_sizes or min(self.pool_sizes) < 0:
            raise ConfigError("optuna searcher: n_trials and max_words must be at least 1, pool_sizes at least 0")
        shares = list(self.train_shares)
        if not shares or sorted(shares) != shares or shares[-1] != 1.0 or shares[0] <= 0:
            raise ConfigError(f"optuna searcher: train_shares must increase and end at 1.0, got {shares}")
        if not self.calibration:
            raise ConfigError("optuna searcher: 'calibration' needs at least one choice ([false], [true] or both)")
        if not self.demonstrations or min(self.demonstrations) < 0 or self.demo_sets < 1:
            raise ConfigError("optuna searcher: demonstrations needs choices of at least 0 and demo_sets at least 1, "
                              f"got {self.demonstrations} and {self.demo_sets}")
        if self.ensemble_top < 0:
            raise ConfigError(f"optuna searcher: ensemble_top must be at least 0 (0 or 1: no ensemble), got {self.ensemble_top}")
        if not self.heartbeat_grace_s >= 3:
            raise ConfigError(f"optuna searcher: heartbeat_grace_s must be at least 3 (seconds), got {self.heartbeat_grace_s}")
        bad = [s for s in self.select if s not in ("metric", "loglik")]
        if bad or not self.select:
            raise ConfigError(f"optuna searcher: select must be a non-empty list of 'metric'/'loglik', got {self.select}")

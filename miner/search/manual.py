"""``manual``: evaluate hand-written prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from miner.prompts import Prompt
from miner.search._base import Capabilities, Evaluate, SearchContext, Searcher
from miner.search._registry import register_searcher


@register_searcher
@dataclass
class ManualSearcher(Searcher):
    """Scores the config's prompts (plus any given here), one at a time, in order."""

    name = "manual"
    summary = "evaluate the config's hand-written prompts as they are"
    capabilities = Capabilities(needs_seed_prompts=True)

    prompts: list[dict[str, Any]] = field(default_factory=list)  # extra prompts (template, verbalizer, ...)
    with_calibration: bool = False  # also score every prompt with content-free calibration

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        candidates = list(context.prompts)
        candidates += [Prompt.from_dict(d, context.label_names) for d in self.prompts]
        if self.with_calibration:
            candidates = [v for p in candidates for v in (p, p.with_(calibrate=not p.calibrate))]
        for prompt in candidates:
            evaluate([prompt])

"""``manual``: evaluate hand-written prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from miner.errors import PromptError
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

    prompts: Annotated[
        list[dict[str, Any]],
        Field(
            description="extra prompts beside the config's, as exported: {template, verbalizer, calibrate, triggers}"
        ),
    ] = field(default_factory=list)
    with_calibration: Annotated[
        bool, Field(description="also score every prompt with content-free calibration flipped")
    ] = False

    def brings_prompts(self) -> bool:
        return bool(self.prompts)

    def _candidates(self, context: SearchContext) -> list[Prompt]:
        candidates = list(context.prompts)
        for i, d in enumerate(self.prompts):
            try:
                candidates.append(Prompt.from_dict(d, context.label_names, distinct=True))
            except (PromptError, TypeError, AttributeError) as exc:
                raise PromptError(f"manual.prompts[{i}]: {exc}") from None
        if self.with_calibration:
            candidates = [v for p in candidates for v in (p, p.with_(calibrate=not p.calibrate))]
        return candidates

    def validate(self, context: SearchContext) -> None:
        for i, prompt in enumerate(self._candidates(context)[: len(context.prompts) + len(self.prompts)]):
            try:
                prompt.parsed.check_fields(context.text_fields)
                context.scorer.compile(prompt)
            except PromptError as exc:
                raise PromptError(f"manual.prompts[{i - len(context.prompts)}]: {exc}") from None

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        for prompt in self._candidates(context):
            evaluate([prompt])

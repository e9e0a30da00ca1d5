"""Templates, verbalizers and prompts."""

from miner.prompts._prompt import Prompt, PromptEnsemble, Verbalizer
from miner.prompts._template import (
    Answer,
    Field,
    Literal,
    Soft,
    Template,
    Trigger,
    parse_template,
    with_demonstrations,
)

__all__ = [
    "Prompt",
    "PromptEnsemble",
    "Verbalizer",
    "Template",
    "parse_template",
    "Answer",
    "Field",
    "Literal",
    "Soft",
    "Trigger",
    "with_demonstrations",
]

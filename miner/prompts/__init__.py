"""Templates, verbalizers and prompts."""

from miner.prompts._prompt import Prompt, Verbalizer
from miner.prompts._template import Answer, Field, Literal, Soft, Template, Trigger, parse_template

__all__ = ["Prompt", "Verbalizer", "Template", "parse_template", "Answer", "Field", "Literal", "Soft", "Trigger"]

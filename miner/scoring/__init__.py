"""Scoring prompts on a frozen model: batching, caching, calibration, metrics, cost."""

from miner.scoring._candidates import TriggerScorer, gradient_prompt, soft_template, trigger_gradient
from miner.scoring._cost import Cost, CostCounter
from miner.scoring._encode import CompiledPrompt, compile_prompt, encode
from miner.scoring._features import answer_states, measure_backward_cost
from miner.scoring._metrics import METRICS, compute_metrics
from miner.scoring._scorer import CONTENT_FREE, Request, Scorer, ScoreResult, calibrate

__all__ = [
    "answer_states",
    "measure_backward_cost",
    "CONTENT_FREE",
    "CompiledPrompt",
    "Cost",
    "CostCounter",
    "METRICS",
    "Request",
    "ScoreResult",
    "Scorer",
    "TriggerScorer",
    "calibrate",
    "compile_prompt",
    "compute_metrics",
    "encode",
    "gradient_prompt",
    "soft_template",
    "trigger_gradient",
]

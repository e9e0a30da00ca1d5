"""One iteration of the reference AutoPrompt loop and of ``autoprompt``, shared by the CPU and GPU benchmarks.

Reference mode (re-implemented from the description of ucinlp/autoprompt's
``create_trigger.py`` on our backend, so both sides use the same model, data and prompt
encoding): the model is *unfrozen* during the backward (every parameter gets a ``.grad``);
ONE random trigger position per step and its top-k HotFlip tokens; the current trigger and
every candidate scored on a fresh batch with one forward pass per candidate, by accuracy;
strict acceptance. The dev pass after every accepted swap is done by the caller.

``autoprompt``'s side calls the public scoring API (``miner.scoring.TriggerScorer``) and the
search helpers of ``miner/search/_hotflip.py``, which is loaded by file path so that this module
needs only torch, transformers and ``miner.models`` / ``miner.prompts`` / ``miner.scoring`` (the
GPU machine has no pydantic, which ``miner.search`` imports).
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from miner.scoring import Scorer, TriggerScorer, gradient_prompt  # noqa: E402


def load_hotflip():
    name = "miner_search_hotflip_standalone"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "miner" / "search" / "_hotflip.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hf = load_hotflip()


def sync(be) -> None:
    if be.device.type == "cuda":
        torch.cuda.synchronize()


def batches(train, size, seed):
    """Endless seeded stream of training batches (reshuffled every pass)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(train))
        for i in range(0, len(order) - size + 1, size):
            yield [train[j] for j in order[i : i + size]]


class Reference:
    """The original loop's step on our backend."""

    def __init__(self, be, prompt, allowed, n_candidates: int, seed: int):
        self.be, self.prompt, self.allowed, self.n = be, prompt, allowed, n_candidates
        self.scorer = Scorer(be, progress=False)
        self.rng = random.Random(seed)
        self.gprompt = gradient_prompt(prompt)

    def dev(self, triggers, dev):
        """Dev accuracy and log-likelihood of a trigger (the reference's dev pass)."""
        res = self.scorer.score(self.prompt.with_(triggers=tuple(triggers)), dev)
        return res.metrics["accuracy"], res.loglik

    def _correct(self, triggers, batch) -> int:
        with torch.no_grad():
            raw = self.scorer.label_logprobs(self.prompt.with_(triggers=tuple(triggers)), batch)
        gold = torch.as_tensor([e.label for e in batch], device=raw.device)
        return int((raw.argmax(-1) == gold).sum())

    def step(self, triggers, grad_batch, cand_batch):
        be = self.be
        model = be.model
        model.requires_grad_(True)  # the original never freezes the model
        try:
            model.zero_grad(set_to_none=False)
            E = be.input_embeddings()
            soft = E[torch.as_tensor(triggers, device=E.device)].detach().clone().requires_grad_(True)
            raw = self.scorer.label_logprobs(self.gprompt, grad_batch, soft_embeds=soft)
            gold = torch.as_tensor([e.label for e in grad_batch], device=raw.device)
            loss = -hf.objective_from_raw(raw, gold, "vocab").mean()
            with self.scorer.counter.backward():
                loss.backward()  # fills soft.grad and every parameter's .grad
            grad = soft.grad.detach().float()
        finally:
            model.requires_grad_(False)
            model.zero_grad(set_to_none=True)
        pos = self.rng.randrange(len(triggers))
        cands = hf.hotflip_topk(grad[pos : pos + 1], be.input_embeddings().detach(), self.allowed, self.n)[
            0
        ].tolist()
        current = self._correct(triggers, cand_batch)  # one forward for the current trigger
        scores = []
        for c in cands:  # ... and one forward per candidate
            t = list(triggers)
            t[pos] = c
            scores.append(self._correct(t, cand_batch))
        best = int(np.argmax(scores))
        if scores[best] > current:  # strict: ties (constant on small batches) reject
            t = list(triggers)
            t[pos] = cands[best]
            return tuple(t), True
        return tuple(triggers), False


class OursStep:
    """One iteration of ``AutoPromptSearcher.search``'s loop body (same functions, same order)."""

    def __init__(
        self, be, prompt, allowed, *, objective: str, top_k: int, n_candidates: int, seed: int, screen=None
    ):
        self.be, self.allowed = be, allowed
        self.objective, self.top_k, self.n_candidates = objective, top_k, n_candidates
        self.scorer = Scorer(screen or be, progress=False)  # screen: the searcher's screen_backend(be)
        self.cs = TriggerScorer(self.scorer, prompt)
        self.prompt = prompt
        self.rng = np.random.default_rng(seed)

    def step(self, triggers, grad_batch, cand_batch):
        p = self.prompt.with_(triggers=tuple(triggers))
        grad, _ = hf.objective_gradient(self.cs, p.triggers, grad_batch, self.objective)
        topk = hf.hotflip_topk(grad, self.be.input_embeddings(), self.allowed, self.top_k)
        cands = hf.sample_candidates(triggers, topk, self.n_candidates, self.rng, self.be)
        scores = hf.candidate_objectives(self.cs, [tuple(triggers)] + cands, cand_batch, self.objective)
        j = int(np.argmax(scores[1:]))
        return (cands[j], True) if scores[1 + j] > scores[0] else (tuple(triggers), False)

"""Stand-ins for the models layer in tests: a scripted model (the external system, not our
code) and a pool that hands it to stages, so that a stage's arithmetic can be checked against
known model behaviour (METHODS 1(e): mock LLM callables)."""

from __future__ import annotations

import re

import numpy as np

from curate.models.base import LM, Sampling
from curate.stages.confidence import OPTIONS, REFLECTION_PREFIX


class ScriptedLM(LM):
    """A stand-in model (the external system, not our code): ``answers[question]`` are the
    responses it samples, in turn; ``verdict(question, response)`` is the option letter its
    reflection puts all its probability on."""

    backend = "scripted"

    def __init__(self, answers: dict[str, list[str]], verdict=lambda q, y: "A"):
        super().__init__("scripted")
        self.answers, self.verdict = answers, verdict
        self.asked: list[str] = []  # questions sampled or reflected on
        self.calls: list[tuple[str, int]] = []  # (question, n) per prompt sampled

    def identity(self) -> str:
        return "scripted"

    def chat_prompt(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def _logprobs(self, pairs):
        raise AssertionError("confidence reads options with choose(), not logprobs()")

    def _generate(self, prompts, sampling: Sampling):
        out = []
        for p in prompts:
            q = p[-1]["content"]
            self.asked.append(q)
            self.calls.append((q, sampling.n))
            pool = self.answers[q]
            out.append([pool[i % len(pool)] for i in range(sampling.n)])
        return out

    def _choose(self, contexts, options):
        assert tuple(options) == OPTIONS
        out = []
        for ctx in contexts:
            assert ctx.endswith(REFLECTION_PREFIX)
            q = re.search(r"Question: (.*?)\n\n", ctx, re.DOTALL).group(1)
            y = re.search(r"(?:Proposed answer|Response): (.*?)\n\n", ctx, re.DOTALL).group(1)
            self.asked.append(q)
            letter = self.verdict(q, y)
            out.append(np.array([0.0 if o == letter else -30.0 for o in options], dtype=np.float32))
        return out


class Pool:
    def __init__(self, **lms: LM):
        self.lms = lms

    def get(self, name: str) -> LM:
        return self.lms[name]

    def identity(self, name: str) -> str:
        return self.lms[name].identity()

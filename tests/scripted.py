"""Stand-ins for the models layer in tests: a scripted model (the external system, not our
code) and a pool that hands it to stages, so that a stage's arithmetic can be checked against
known model behaviour (METHODS 1(e): mock LLM callables)."""

from __future__ import annotations

import re
import zlib

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


class ScriptedScorer(ScriptedLM):
    """A ``ScriptedLM`` that also scores: a target's tokens are its words, each with
    log-probability ``-nll[target]`` (1.0 when not given), so a loss's arithmetic can be
    checked by hand."""

    def __init__(self, answers: dict[str, list[str]], nll: dict[str, float] | None = None):
        super().__init__(answers)
        self.nll = nll or {}
        self.scored: list[tuple[str, str]] = []  # (context, target) pairs scored

    def _logprobs(self, pairs):
        self.scored.extend(pairs)
        return [np.full(len(t.split()), -self.nll.get(t, 1.0), dtype=np.float32) for _, t in pairs]


class BernoulliTeacher(LM):
    """A stand-in teacher for rejection sampling: on question q it answers correctly with
    probability ``p[q]`` ("... \\boxed{answers[q]}"), else "The answer is \\boxed{42}"; each
    sample's coin depends only on (question, sampling seed, sample index), as a seeded model's
    would. ``log`` holds (question, seed, index, correct, response) for every sample it wrote."""

    backend = "scripted"

    def __init__(self, p: dict[str, float], answers: dict[str, str], name: str = "teacher"):
        super().__init__(name)
        self.p, self.answers = p, answers
        self.log: list[tuple[str, int, int, bool, str]] = []
        self.requests: list[tuple[int, int, int]] = []  # (prompts, n, seed) per uncached call

    def identity(self) -> str:
        return "bernoulli-teacher"

    def chat_prompt(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def _logprobs(self, pairs):
        raise AssertionError("a teacher only samples")

    def _generate(self, prompts, sampling: Sampling):
        self.requests.append((len(prompts), sampling.n, sampling.seed))
        out = []
        for p in prompts:
            q = p[-1]["content"]
            key = zlib.crc32(q.encode())
            ys = []
            for i in range(sampling.n):
                right = np.random.default_rng([key, sampling.seed, i]).random() < self.p[q]
                y = (f"Working it out step by step. The answer is \\boxed{{{self.answers[q]}}}." if right
                     else "The answer is \\boxed{42}.")
                self.log.append((q, sampling.seed, i, bool(right), y))
                ys.append(y)
            out.append(ys)
        return out


def numbered_items(items: list[tuple[str, str, str]]) -> str:
    """``(question, solution, final answer)`` items in LLM2LLM's answer format."""
    return "Here are the new problems:\n\n" + "".join(
        f"{k}. Question: {q}\nAnswer: {s}\n#### {a}\n\n" for k, (q, s, a) in enumerate(items, 1))


class ItemTeacher(LM):
    """A stand-in LLM2LLM teacher: it reads the seed question from each request and answers
    ``write(question, sampling_seed, n)`` (the text of a response; ``n`` is how many problems
    the request asks for). ``requests`` holds (question, n, seed, shows kept problems) for
    every request it answered."""

    backend = "scripted"

    def __init__(self, write, name: str = "teacher"):
        super().__init__(name)
        self.write = write
        self.requests: list[tuple[str, int, int, bool]] = []

    def identity(self) -> str:
        return "item-teacher"

    def chat_prompt(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def _logprobs(self, pairs):
        raise AssertionError("a teacher only samples")

    def _generate(self, prompts, sampling: Sampling):
        out = []
        for chat in prompts:
            # [system, example request, example response, the request(, kept problems, "now generate more")]
            q = re.search(r"following question:\n\n(.*?)\n\nThe answer key", chat[3]["content"], re.DOTALL).group(1)
            n = int(re.search(r"generate (\d+) ", chat[-1]["content"]).group(1))
            self.requests.append((q, n, sampling.seed, len(chat) > 4))
            out.append([self.write(q, sampling.seed, n)])
        return out

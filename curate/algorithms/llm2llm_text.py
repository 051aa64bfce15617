"""LLM2LLM's text (Lee et al., ACL Findings 2024; code SqueezeAILab/LLM2LLM, GSM8K): the chat
that asks the teacher for new problems like a seed question, the numbered item format its
answer comes in, and ROUGE-L, by which a new question that nearly copies one already seen is
dropped. The ``llm2llm`` stage runs the loop; no stage here.

* **The request** (``request``): LLM2LLM's system prompt (``GSM8K/prompt_gsm.txt``, adapted
  to competition math: the solution shows its work and ends with the final answer, a number
  or closed-form expression without units), its worked few-shot exchange, and a user turn
  with the seed question and its answer key, asking for ``n`` similar problems. A retry may
  show the problems already kept and ask for ``n`` more unlike them (as
  ``generate_data.py`` does on odd attempts). One request asks for at most ``MAX_ITEMS``.
* **The items** (``parse_items``): split on "N. Question:", then the first "Answer:" and
  the last "####"; an item missing one, or with an empty question, solution or final
  answer, is unparseable, and so is a response with no numbered item. The paper drops the
  last item of a response cut off by the length limit; the models layer gives no finish
  reasons, so a cut-off item is dropped only when it lacks its "####" line. The paper's
  other post-filters (items starting with punctuation or a non-ASCII character, "Write a
  program") are not applied.
* **ROUGE-L F1** (``rouge_l``): 2 * LCS / (|a| + |b|) over lower-cased alphanumeric tokens,
  as ``rouge_score`` tokenises without stemming. ``QuestionPool`` holds every question so
  far and answers whether a new one scores above a threshold (LLM2LLM: 0.95) against any,
  computing the LCS only where the lengths and the shared tokens allow the threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_ITEMS = 10  # the most problems one request asks for: min(per_seed + attempt, 10)

# GSM8K/prompt_gsm.txt, adapted to competition math.
SYSTEM_PROMPT = """\
You are an educational A.I. whose purpose is to take math problems that students get wrong and generate new problems \
to help them practice their mathematical skills. Your goal is to generate a set of new math problems that reflect the \
different skills and techniques found in the example problem.

Here are the requirements:
1. A language model should be able to solve the problem in writing. For example, do not ask for a picture, a diagram, \
audio or any action.
2. The math problem should be in English.
3. The solution should show the reasoning and calculations step by step and end with the final answer.
4. The final answer should be a number or a closed-form expression (such as 12, -0.5, 3/4, 2\\sqrt{3} or n(n+1)/2), \
without units or words.
5. Don't make any mathematical mistakes of your own!
6. Try not to copy too much information from the original problem. Replace names, numbers and settings so that we can \
test the student's understanding, rather than their ability to memorize previous test questions.

Always return your problems in the form:
1. Question: [QUESTION]
Answer: [SOLUTION]
#### [FINAL ANSWER]"""

REQUEST = """\
The student was given the following question:

{question}

The answer key has this as the rationale and answer:

{key}

Please generate {n} similar question{s}, along with the correct calculations and rationale."""

EXAMPLE_REQUEST = REQUEST.format(
    question="How many positive divisors does 36 have?",
    key="Since 36 = 2^2 * 3^2, a divisor is 2^a * 3^b with 0 <= a <= 2 and 0 <= b <= 2, so there are "
        "(2 + 1)(2 + 1) = 9 of them.\n#### 9", n=1, s="")
EXAMPLE_RESPONSE = """\
Sure, here is a new problem that practises the same skill, with the correct calculations and rationale:

1. Question: How many positive divisors does 200 have?
Answer: Since 200 = 2^3 * 5^2, a divisor is 2^a * 5^b with 0 <= a <= 3 and 0 <= b <= 2. There are 3 + 1 = 4 choices \
for a and 2 + 1 = 3 choices for b, so 200 has 4 * 3 = 12 positive divisors.
#### 12"""

SHOWN = "Here are {n} similar problems based on the given one, along with the correct calculations and rationale:\n"
MORE = "Now generate {n} more questions different from the ones you just generated, along with the correct calculations and rationale."

ITEM = re.compile(r"\d{1,2}\.\s+Question:")  # generate_data.py's item header
WORD = re.compile(r"[a-z0-9]+")  # rouge_score's tokens (no stemming)


# -- the items of a teacher response -----------------------------------------------------------
@dataclass(frozen=True)
class Item:
    question: str
    solution: str  # the worked solution, without the final "#### N"
    answer: str  # N

    def response(self) -> str:
        return f"{self.solution}\n#### {self.answer}"

    def shown(self, k: int) -> str:
        return f"{k}. Question: {self.question}\nAnswer: {self.response()}\n"


def parse_items(text: str) -> tuple[list[Item], int]:
    """The numbered items of a teacher response, and how many could not be read (a response
    with no "N. Question:" at all counts as one)."""
    pieces = ITEM.split(text or "")
    if len(pieces) < 2:
        return [], 1
    items, bad = [], 0
    for piece in pieces[1:]:
        question, answer_mark, rest = piece.partition("Answer:")
        solution, hashes, tail = rest.rpartition("####")
        final = tail.strip().split("\n", 1)[0].strip().rstrip(".").strip()
        if not (answer_mark and hashes and question.strip() and solution.strip() and final):
            bad += 1
            continue
        items.append(Item(question.strip(), solution.strip(), final))
    return items, bad


def request(question: str, key: str, n: int, shown: list[Item], system_prompt: str | None = None) -> list[dict]:
    """The chat that asks the teacher for ``n`` new problems like ``question`` (whose answer
    key is ``key``), or, with ``shown``, for ``n`` more unlike those already kept;
    ``system_prompt`` replaces LLM2LLM's instructions."""
    system = SYSTEM_PROMPT if system_prompt is None else system_prompt
    chat = [{"role": "system", "content": system}, {"role": "user", "content": EXAMPLE_REQUEST},
            {"role": "assistant", "content": EXAMPLE_RESPONSE}]
    asked = len(shown) if shown else n
    chat.append({"role": "user", "content": REQUEST.format(question=question, key=key, n=asked,
                                                          s="s" if asked > 1 else "")})
    if shown:
        listed = SHOWN.format(n=len(shown)) + "".join(item.shown(k) for k, item in enumerate(shown, 1))
        chat += [{"role": "assistant", "content": listed}, {"role": "user", "content": MORE.format(n=n)}]
    return chat


# -- ROUGE-L ----------------------------------------------------------------------------------
def rouge_tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """The length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists: 2 * LCS / (|a| + |b|) (precision LCS/|a|, recall LCS/|b|)."""
    return 2 * lcs_length(a, b) / (len(a) + len(b)) if a and b else 0.0


class QuestionPool:
    """Every question so far, tokenised; tells whether a new one is a near-copy of any."""

    def __init__(self, texts: list[str]):
        self.tokens: list[list[str]] = []
        self.bags: list[Counter] = []
        for t in texts:
            self.add(t)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        self.tokens.append(tokens)
        self.bags.append(Counter(tokens))

    def near_copy(self, text: str, threshold: float) -> bool:
        """ROUGE-L F1 > ``threshold`` with some question of the pool. The LCS is computed only
        where the lengths and the shared tokens (both bound it) allow the threshold."""
        tokens = rouge_tokens(text)
        bag, n = Counter(tokens), len(tokens)
        for other, other_bag in zip(self.tokens, self.bags):
            m = len(other)
            if not n or not m or 2 * min(n, m) / (n + m) <= threshold:
                continue
            if 2 * sum((bag & other_bag).values()) / (n + m) <= threshold:
                continue
            if rouge_l(tokens, other) > threshold:
                return True
        return False

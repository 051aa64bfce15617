"""CHAMP: 270 competition math problems with reference solutions, and 19,440 model
solutions (4 models x 18 prompt settings per problem), shipped by the PyPI package
``champ-dataset`` (Mao et al., "CHAMP: A Competition-level Dataset for Fine-Grained
Analyses of LLMs' Mathematical Reasoning Capabilities", 2024).

Every conversation in the data is [System, (few-shot examples, or a concept-example
exchange), User: the problem (with hints / a partial solution by setting), Model: the
solution, User: "Now, summarize the answer above in one sentence...", Model: the one
sentence answer]. One SFT row per model solution:

* user turn: the bare problem text. The hints, concepts and few-shot examples of the
  setting are not part of the row (``prompt_setting`` says which were shown).
* assistant turn: the solution message, then "\\n\\n" and the summary sentence when
  there is one. A solution cut off by the length limit (``LENGTH_CURRENT``) has no
  summary (``LENGTH_PREVIOUS``); its row says ``finish_reason == "length"``.
* "1/3 Soln" / "2/3 Soln": the model continued a partial solution (the first third or
  two thirds of the reference steps, numbered) given in its prompt, so those steps are
  put in front of its text to make the response a whole solution. Problems whose
  reference is too short to have a partial prefix got the bare problem; nothing is
  added there.

``include_reference`` adds one row per problem whose response is the reference steps,
numbered, ending with "Answer: <reference answer>".
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..errors import SourceError
from ..fingerprint import hash_file, hash_parts
from ..records import MESSAGES_TYPE
from ..stage import StageConfig, StageContext
from .base import REJECT_SCHEMA, Source, SourceOutput, suggest

DATA_FILE = "dataset_files/v0.json"
SHOWN_FILE = f"champ_dataset/{DATA_FILE}"
PARTIAL_SETTINGS = ("1/3 Soln", "2/3 Soln")
PARTIAL_MARKER = "Below is a partial solution to the problem that may be helpful:\n\n"
SUMMARY_PROMPT = "Now, summarize the answer above in one sentence"
STEP_START = re.compile(r"\s*\d+\.\s")


class ChampConfig(StageConfig):
    include_model_solutions: bool = True
    """One row per model solution (19,440 with no filter)."""
    include_reference: bool = False
    """One row per problem with the reference step-by-step solution (270)."""
    models: list[str] | None = Field(None, min_length=1)
    """Only these models' solutions (GPT-3.5, GPT-4, GPT-4 Turbo, PaLM 2 Medium)."""
    prompt_settings: list[str] | None = Field(None, min_length=1)
    """Only these prompt settings (0-Shot, 5-Shot, 1/3 Soln, No C w/ H, ...)."""
    categories: list[str] | None = Field(None, min_length=1)
    """Only problems of these categories (Combinatorics, Inequality, Number-Theory, Polynomial, Sequence)."""
    exclude_problems: list[str] | None = None
    """Leave these problems out (ids such as P_Combinatorics_1): e.g. the held-out evaluation
    problems, when this data trains a model that will be evaluated on them."""
    limit_problems: int | None = Field(None, ge=1)
    """Only the first N problems, in the data's order (for demos and tests)."""

    @field_validator("models", "prompt_settings", "categories")
    @classmethod
    def _known_names(cls, given: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if not given:
            return given
        try:
            path = data_path()
        except SourceError:
            return given  # check() reports the missing package
        if not path.is_file():
            return given
        models, settings, categories = _names(path, path.stat().st_mtime_ns)
        what, known = {"models": ("model", models), "prompt_settings": ("prompt setting", settings),
                       "categories": ("category", categories)}[info.field_name]
        unknown = [f"unknown {what} '{name}'{suggest(name, known)}" for name in given if name not in known]
        if unknown:
            raise ValueError(f"{'; '.join(unknown)} (CHAMP has: {', '.join(known)})")
        return given

    @model_validator(mode="after")
    def _reads_something(self) -> ChampConfig:
        if not (self.include_model_solutions or self.include_reference):
            raise ValueError("nothing to read: include_model_solutions and include_reference are both false")
        if not self.include_model_solutions and (self.models or self.prompt_settings):
            raise ValueError("models / prompt_settings choose model solutions, but include_model_solutions is false")
        return self


def data_path() -> Path:
    try:
        root = importlib.resources.files("champ_dataset")
    except ModuleNotFoundError:
        raise SourceError("the champ source needs the champ-dataset package (pip install champ-dataset)") from None
    return Path(str(root / DATA_FILE))


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read the CHAMP data at {path}: {e}") from None


@lru_cache(maxsize=2)
def _names(path: Path, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The models, prompt settings and categories in the data, in their order (cached per file state)."""
    models: dict[str, None] = {}
    settings: dict[str, None] = {}
    categories: dict[str, None] = {}
    for problem in _load(path)["problems"].values():
        categories[problem["category"]] = None
        for key in problem["conversations"]:
            model, setting = key.split("|", 1)
            models[model] = settings[setting] = None
    return tuple(models), tuple(settings), tuple(categories)


class _Bad(Exception):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message


def assemble(messages: list[dict], setting: str) -> tuple[str, str]:
    """(the assistant turn, finish_reason) of one CHAMP conversation."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "User"]
    last = users[-1] if users else -1
    if last < 2 or not str(messages[last].get("text") or "").startswith(SUMMARY_PROMPT):
        raise _Bad("bad_messages", "the conversation does not end with the 'summarize the answer' turn")
    solution, prompt = messages[last - 1], messages[last - 2]
    if not str(solution.get("role")).startswith("Model.") or prompt.get("role") != "User":
        raise _Bad("bad_messages", "no model solution between the problem and the 'summarize' turn")
    text = solution.get("text")
    if not isinstance(text, str):
        raise _Bad("not_a_string", f"the solution message is {type(text).__name__}, not a string")
    if not text.strip():
        raise _Bad("empty_text", "the solution message is empty")
    if setting in PARTIAL_SETTINGS and PARTIAL_MARKER in prompt["text"]:
        given = prompt["text"].split(PARTIAL_MARKER, 1)[1].strip()
        # A model that goes on numbering ("5. ...") continues the list; one that starts
        # with prose ("Let's continue ...") gets a paragraph break.
        text = given + ("\n" if STEP_START.match(text) else "\n\n") + text.lstrip()
    summary = messages[last + 1].get("text") if last + 1 < len(messages) else None
    if isinstance(summary, str) and summary.strip():
        text = f"{text}\n\n{summary}"
    return text, "length" if solution.get("error") == "LENGTH_CURRENT" else "stop"


def annotation_labels() -> dict[str, bool]:
    """CHAMP's human annotations as audit labels: for each of the 540 annotated model solutions
    (``fws_annotations``: the first wrong step, or none), its row id -> whether it is fully
    correct (no wrong step marked). ``curate audit REF --labels champ`` reads them."""
    labels = {}
    for pid, problem in _load(data_path())["problems"].items():
        for key, fws in (problem.get("fws_annotations") or {}).items():
            model, setting = key.split("|", 1)
            labels[f"{pid}/{model}/{setting}"] = fws.get("start_idx") in (None, "None")
    return labels


def reference_solution(problem: dict) -> str:
    steps = "\n".join(f"{i}. {step['_text']}" for i, step in enumerate(problem["solution"]["steps"], 1))
    return f"{steps}\n\nAnswer: {problem['_answer']}"


class ChampSource(Source):
    """The CHAMP math pool (package ``champ-dataset``) as SFT rows with reference answers."""

    type: ClassVar[str] = "champ"
    Config: ClassVar[type[ChampConfig]] = ChampConfig
    config: ChampConfig

    def check(self) -> list[str]:
        try:
            path = data_path()
        except SourceError as e:
            return [str(e)]
        return [] if path.is_file() else [f"the champ-dataset package has no data file at {path}"]

    def input_files(self) -> list[tuple[str, Path]]:
        path = data_path()
        if not path.is_file():
            raise SourceError(f"the champ-dataset package has no data file at {path}")
        return [(SHOWN_FILE, path)]

    def fingerprint(self) -> str:
        (_, path), = self.input_files()
        config = self.config.model_dump(mode="json", exclude_defaults=True)
        return hash_parts("source", self.type, config, self.version, importlib.metadata.version("champ-dataset"), hash_file(path))

    def read(self, ctx: StageContext | None = None) -> SourceOutput:
        ctx = ctx or StageContext()
        (_, path), = self.input_files()
        problems = list(_load(path)["problems"].items())[: self.config.limit_problems]
        unknown = sorted(set(self.config.exclude_problems or ()) - set(_load(path)["problems"]))
        if unknown:
            raise SourceError(f"champ source: exclude_problems names problems CHAMP does not have: {', '.join(unknown)}")
        if self.config.categories:
            problems = [(pid, p) for pid, p in problems if p["category"] in self.config.categories]
        if self.config.exclude_problems:
            problems = [(pid, p) for pid, p in problems if pid not in set(self.config.exclude_problems)]
        models = set(self.config.models or ())
        settings = set(self.config.prompt_settings or ())
        names = ("id", "messages", "answer", "category", "model", "prompt_setting", "problem_id", "finish_reason", "source")
        cols: dict[str, list] = {n: [] for n in names}
        rejects: dict[str, list] = {n: [] for n in REJECT_SCHEMA.names}
        rows_in = 0

        def keep(rid: str, problem: dict, response: str, model: str, setting: str, pid: str, finish: str) -> None:
            messages = [{"role": "user", "content": problem["_text"]}, {"role": "assistant", "content": response}]
            for name, value in zip(names, (rid, messages, problem["_answer"], problem["category"], model, setting, pid, finish, "champ")):
                cols[name].append(value)

        def reject(rid: str, bad: _Bad, record: Any) -> None:
            values = (rid, bad.reason, f"{SHOWN_FILE} {rid}: {bad.message}", SHOWN_FILE, rows_in, json.dumps(record, ensure_ascii=False))
            for name, value in zip(REJECT_SCHEMA.names, values):
                rejects[name].append(value)

        for pid, problem in ctx.reporter.track(problems, total=len(problems), description="read champ"):
            if self.config.include_model_solutions:
                for key, conversation in problem["conversations"].items():
                    model, setting = key.split("|", 1)
                    if (models and model not in models) or (settings and setting not in settings):
                        continue
                    rows_in += 1
                    rid = f"{pid}/{model}/{setting}"
                    try:
                        if not str(problem.get("_text") or "").strip():
                            raise _Bad("empty_text", "the problem text is empty")
                        response, finish = assemble(conversation["messages"], setting)
                    except _Bad as bad:
                        reject(rid, bad, conversation)
                        continue
                    keep(rid, problem, response, model, setting, pid, finish)
            if self.config.include_reference:
                rows_in += 1
                keep(f"{pid}/reference", problem, reference_solution(problem), "reference", "reference", pid, "stop")

        types = {"messages": MESSAGES_TYPE}
        kept = pa.table({n: pa.array(cols[n], type=types.get(n, pa.string())) for n in names})
        return SourceOutput(kept, pa.table(rejects, schema=REJECT_SCHEMA), rows_in)

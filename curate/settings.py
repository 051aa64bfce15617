"""``--set STEP.KEY=VALUE``: single settings from the command line, put into a recipe's
data where the YAML would hold them -- a step's config (for a named ``pipeline:``, as an
``overrides:`` entry), ``train:``, ``eval:`` or ``executor:`` -- before it is validated, so they are checked
exactly as the file is. Where each one went is remembered, so a problem with it is reported
against the ``--set`` item, not a line of the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Protocol

import yaml

from .errors import RecipeError
from .pipeline import suffixed

Loc = tuple[Any, ...]


class Problems(Protocol):
    """What ``apply_settings`` reports into (the recipe's problem list)."""

    settings: dict[Loc, str]

    def add(self, loc: Loc, msg: str) -> None: ...


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["STEP.KEY=VALUE", ...]`` (the CLI's ``--set``) -> ``{"STEP.KEY": value}``; a value
    is read as YAML, so ``30`` is a number, ``[a, b]`` a list, ``null`` None."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item}: write KEY=VALUE, e.g. --set heuristic_filter.min_words=30")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise RecipeError(f"--set {item}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return out


def apply_settings(data: dict, settings: dict[str, Any], problems: Problems) -> None:
    """Put each ``--set`` value where the recipe would hold it, remembering where, so a
    problem with it is reported against ``--set`` rather than a line of the file."""
    for key, value in settings.items():
        section, dot, field_path = key.partition(".")
        if not dot or not field_path:
            problems.add(("--set",), f"--set {key}: name a step and a key (STEP.KEY), or train.KEY / eval.KEY / executor.KEY")
            continue
        *parents, last = field_path.split(".")
        if section == "executor":  # optional, and often a bare name (executor: ray): it gains a mapping
            current = data.get("executor")
            data["executor"] = {"type": current} if isinstance(current, str) else current if isinstance(current, dict) else {}
        if section in ("train", "eval", "executor"):
            if not isinstance(data.get(section), dict):
                problems.add((section,), f"--set {key}: the recipe has no {section}: section")
                continue
            loc: Loc = (section,)
            target = data[section]
        elif "pipeline" in data:
            overrides = data.setdefault("overrides", {}) if isinstance(data.get("overrides", {}), dict) else None
            if overrides is None:
                continue  # the recipe's own overrides: error says so
            target = overrides.setdefault(section, {}) if isinstance(overrides.get(section, {}), dict) else None
            loc = ("overrides", section)
            if target is None:
                continue
        else:
            found = stage_item(data, section)
            if found is None:
                steps = [s for s in step_names_of(data) if s]
                problems.add(("--set",), f"--set {key}: the recipe has no step '{section}'"
                             + (suggest(section, steps) if steps else ""))
                continue
            i, stage_name, target = found
            loc = ("stages", i, stage_name)
        for part in parents:  # a key inside a sub-config: difficulty.sampling.k_p
            inner = target.get(part, {})
            if isinstance(inner, str):  # a bare variant name (sampling: uniform) gains a setting
                inner = {"method": inner}
            if not isinstance(inner, dict):
                problems.add(("--set",), f"--set {key}: '{part}' holds {inner!r}, not a mapping of settings")
                break
            target[part] = inner
            target = inner
        else:
            target[last] = value
        problems.settings[(*loc, *parents, last)] = key


def step_names_of(data: dict) -> list[str]:
    """The step name of each item of a ``stages:`` list as written (``NAME``, ``NAME_2`` when
    repeated; "" for an item that is not one stage, so positions match the list's)."""
    items = data.get("stages") if isinstance(data.get("stages"), list) else []
    names = [item if isinstance(item, str) else next(iter(item)) if isinstance(item, dict) and len(item) == 1 else ""
             for item in items]
    return suffixed([n if isinstance(n, str) else "" for n in names])


def stage_item(data: dict, step: str) -> tuple[int, str, dict] | None:
    """(index, stage name, config mapping) of the ``stages:`` item that is ``step``; a bare
    or empty item gets a mapping to hold the value."""
    items = data.get("stages")
    if not isinstance(items, list):
        return None
    for i, name in enumerate(step_names_of(data)):
        if name != step:
            continue
        item = items[i]
        stage_name = item if isinstance(item, str) else next(iter(item))
        if isinstance(item, str) or item[stage_name] is None:
            items[i] = item = {stage_name: {}}
        return (i, stage_name, item[stage_name]) if isinstance(item[stage_name], dict) else None
    return None


def suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, else the list of valid ones."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(choices)}"

"""Turning a config's ``path`` into a sorted list of files, and each file into the short
name its rows' default ids use."""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from pathlib import Path

from ..errors import SourceError

GLOB_CHARS = frozenset("*?[")


def resolve(path: str | list[str], extensions: tuple[str, ...], key: str = "path") -> tuple[list[Path], list[str]]:
    """The files ``path`` names, sorted and without repeats, and the problems found.

    Each entry is a file (any extension: the user named it), a directory (every file
    with one of ``extensions`` inside it, recursively, hidden ones left out) or a glob.
    Relative entries are relative to the current working directory.
    """
    entries = [path] if isinstance(path, str) else list(path)
    found: set[Path] = set()
    problems: list[str] = []
    for entry in entries:
        p = Path(os.path.abspath(Path(entry).expanduser()))
        if GLOB_CHARS & set(entry):
            matches = [Path(m) for m in glob.glob(str(p), recursive=True) if os.path.isfile(m)]
            if not matches:
                problems.append(f"{key}: no file matches '{p}'")
        elif p.is_dir():
            matches = [
                f
                for f in p.rglob("*")
                if f.is_file() and has_extension(f.name, extensions) and not any(part.startswith(".") for part in f.relative_to(p).parts)
            ]
            if not matches:
                problems.append(f"{key}: directory '{p}' holds no {'/'.join(extensions)} files")
        elif p.is_file():
            matches = [p]
        else:
            problems.append(f"{key}: no file matches '{p}'")
            continue
        unreadable = [m for m in matches if not os.access(m, os.R_OK)]
        problems.extend(f"{key}: cannot read '{m}' (permission denied)" for m in unreadable)
        found.update(matches)
    return sorted(found, key=str), problems


def resolve_or_raise(path: str | list[str], extensions: tuple[str, ...], key: str = "path") -> list[Path]:
    files, problems = resolve(path, extensions, key)
    if problems:
        raise SourceError("; ".join(problems))
    return files


def has_extension(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def stem(name: str, extensions: tuple[str, ...]) -> str:
    """The file name without the reader's extension ('a.jsonl.gz' -> 'a')."""
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return Path(name).stem


def id_names(files: list[Path], extensions: tuple[str, ...]) -> list[str]:
    """A short, unique name per file for default ids: the stem, or, where several files
    share a stem, as many parent directories as it takes to tell them apart."""
    stems = [stem(f.name, extensions) for f in files]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(stems):
        groups[s].append(i)
    names = list(stems)
    for s, members in groups.items():
        if len(members) == 1:
            continue
        depth = max(len(files[i].parent.parts) for i in members)
        for k in range(1, depth + 1):
            candidates = {i: "/".join([*files[i].parent.parts[-k:], s]).lstrip("/") for i in members}
            if len(set(candidates.values())) == len(members):
                break
        else:  # same directory, same stem, different extensions: keep the whole name
            candidates = {i: str(files[i]).lstrip("/") for i in members}
        for i, name in candidates.items():
            names[i] = name
    return names


def shown(path: Path) -> str:
    """A path as messages show it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

"""Turning a config's ``path`` into a sorted list of files, and each file into the short
name its rows' default ids use.

An entry is a local path or a URI that pyarrow's filesystems read (``file://``, ``s3://``,
``gs://``, ``hdfs://``, ...): a URI's files are ``RemotePath``s, opened through the
filesystem wherever the readers open a file, so a source on object storage reads as one on
disk does.
"""

from __future__ import annotations

import glob
import os
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import SourceError

GLOB_CHARS = frozenset("*?[")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: str) -> bool:
    """``scheme://...`` (a Windows drive letter is no scheme)."""
    return bool(_URI.match(value))


@dataclass(frozen=True)
class RemotePath:
    """A file behind a pyarrow filesystem: what the readers need of a ``Path`` (``name``,
    ``parent``, opening it) for a file named by a URI. ``str()`` is the URI."""

    uri: str
    path: str  # the path within the filesystem
    filesystem: Any = field(compare=False, hash=False)  # a pyarrow.fs.FileSystem

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> PurePosixPath:
        return PurePosixPath(self.path).parent

    def __str__(self) -> str:
        return self.uri

    def relative_to(self, other: Any) -> Any:
        raise ValueError(f"{self.uri} is not a local path")

    def listing_key(self) -> str:
        """What the filesystem's listing says of the file (size, modification time), hashed:
        a changed object changes it (``curate.fingerprint.hash_file``)."""
        import xxhash

        info = self.filesystem.get_file_info(self.path)
        return xxhash.xxh3_128_hexdigest(f"{self.uri}\0{info.size}\0{info.mtime_ns}".encode())

    def open_bytes(self) -> IO[bytes]:
        """The file as a buffered stream of bytes (as stored: decompression is the reader's)."""
        return io.BufferedReader(self.filesystem.open_input_stream(self.path, compression=None), 1 << 20)



def _glob_regex(pattern: str) -> re.Pattern:
    """A glob over '/'-separated parts as the shell's (and ``glob``'s) reading of it: ``*`` and
    ``?`` stay within one part and match no leading dot, ``**`` (a whole part) is any number of
    parts that are not hidden, ``[...]`` a character class."""
    out = []
    for k, part in enumerate(pattern.split("/")):
        sep = "/" if k else ""
        if part == "**":
            out.append(f"{sep}(?:[^/.][^/]*/)*" if k else "(?:[^/.][^/]*/)*")
            continue
        rx, i = [] if part.startswith(".") else ["(?![.])"], 0
        while i < len(part):
            ch = part[i]
            if ch == "*":
                rx.append("[^/]*")
            elif ch == "?":
                rx.append("[^/]")
            elif ch == "[" and "]" in part[i + 2 :]:
                end = part.index("]", i + 2)
                body = part[i + 1 : end]
                rx.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = end
            else:
                rx.append(re.escape(ch))
            i += 1
        out.append(("" if out and out[-1].endswith("/)*") else sep) + "".join(rx))
    return re.compile("".join(out))


def _resolve_uri(entry: str, extensions: tuple[str, ...], key: str) -> tuple[list[RemotePath], list[str]]:
    """The files a URI names (a file, a directory's files with ``extensions``, or a glob in
    its last parts), through the filesystem pyarrow picks for its scheme."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    scheme_end = entry.index("://") + 3
    globbed = next((k for k, ch in enumerate(entry) if ch in GLOB_CHARS and k >= scheme_end), None)
    # A glob is matched here, not parsed by pyarrow ('[' is no URI character): the folder before it is opened
    opened = entry if globbed is None else entry[: entry.rfind("/", scheme_end, globbed) + 1]
    rest = "" if globbed is None else entry[len(opened):]
    try:
        filesystem, path = pafs.FileSystem.from_uri(opened)
    except (pa.ArrowException, OSError, ValueError) as e:
        return [], [f"{key}: cannot open '{entry}': {e}"]
    if rest:
        path = path.rstrip("/") + "/" + rest
    at = entry.find(path, scheme_end) if path else -1
    prefix = entry[:at] if at >= 0 else entry[:scheme_end]  # file://, s3://, hdfs://host:port
    prefix = re.sub(r"^([^/]*//)[^/@]*@", r"\1", prefix)  # credentials (s3://KEY:SECRET@...) never reach a message

    def uri_of(p: str) -> str:
        return prefix + p

    def listed(folder: str, recursive: bool = True) -> list[Any]:
        selector = pafs.FileSelector(folder, recursive=recursive)
        return [i for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File]

    try:
        if GLOB_CHARS & set(path):
            parts = path.split("/")
            fixed = next(k for k, part in enumerate(parts) if GLOB_CHARS & set(part))
            folder, rest = "/".join(parts[:fixed]) or "/", "/".join(parts[fixed:])
            pattern = _glob_regex(rest)
            deep = "/" in rest
            infos = (listed(folder, deep) if filesystem.get_file_info(folder).type == pafs.FileType.Directory else [])
            root = folder.rstrip("/") + "/"
            found = [i.path for i in infos if pattern.fullmatch(i.path[len(root):])]
            problems = [] if found else [f"{key}: no file matches '{entry}'"]
        else:
            info = filesystem.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                root = path.rstrip("/") + "/"
                found = [i.path for i in listed(path) if has_extension(i.path, extensions)
                         and not any(part.startswith(".") for part in i.path[len(root):].split("/"))]
                problems = [] if found else [f"{key}: directory '{entry}' holds no {'/'.join(extensions)} files"]
            elif info.type == pafs.FileType.File:
                found, problems = [path], []
            else:
                found, problems = [], [f"{key}: no file matches '{entry}'"]
    except (pa.ArrowException, OSError) as e:
        return [], [f"{key}: cannot read '{entry}': {e}"]
    return [RemotePath(uri_of(f), f, filesystem) for f in found], problems


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
        if is_uri(entry):
            remote, trouble = _resolve_uri(entry, extensions, key)
            found.update(remote)
            problems.extend(trouble)
            continue
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

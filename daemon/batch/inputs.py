"""The files of a batch: INPUT arguments (files, folders, globs, lists of paths) → `InputFile`s, each with the
place of its outputs under --out, mirroring the input tree.

- A file named explicitly is taken whatever its suffix (FFmpeg decides); one that does not exist is kept, so
  that it becomes a failed line in the manifest like any unreadable file.
- A folder is walked (sorted, symlinked folders not followed, hidden entries and the --out folder skipped)
  for files with an audio/video suffix.
- A glob (`*`, `?`, `[`; `**` spans folders) is expanded unless a file of that literal name exists.
- `@LIST`, or a named file ending in .txt/.lst/.list, is a list: one path per line (files, folders or globs;
  relative to the current folder), blank lines and lines starting with # ignored.

The outputs mirror the tree below the common folder of the inputs (a folder input counts as itself, a file
as its parent): `batch talks/ --out text` writes talks/2024/a.mp3 as text/2024/a.txt. Two files that would
share an output name (a.mp3 and a.wav) keep their suffix instead (a.mp3.txt, a.wav.txt).
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from qasr.errors import QasrError

AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .mp3 .mp2 .ogg .oga .opus .spx .m4a .m4b .aac .wma .aif .aiff .aifc .au .snd .amr .awb .ac3 "
    ".eac3 .caf .wv .ape .tta .mka .webm .weba .mp4 .m4v .mkv .mov .avi .wmv .flv .3gp .3g2 .ts .mts .mpg .mpeg "
    ".vob .ogv".split()
)
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})


@dataclass(frozen=True)
class InputFile:
    path: str  # as named (joined from the input): what json's "file" says, as `transcribe PATH` would
    key: str  # the absolute path: the manifest's key
    out: PurePosixPath  # output path under --out without the format's suffix ("2024/a")


@dataclass
class Inputs:
    files: list[InputFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # inputs that gave no file (a glob that matched nothing ...)


def collect(arguments: list[str], out_dir: Path) -> Inputs:
    """Every file the arguments name, once, in argument order (folders sorted)."""
    skip = os.path.abspath(out_dir)
    found: list[tuple[str, str]] = []  # (path as named, root folder it mirrors from)
    notes: list[str] = []
    for argument in arguments:
        _expand(argument, skip, found, notes, depth=0)
    files: dict[str, tuple[str, str]] = {}
    for path, root in found:
        files.setdefault(os.path.abspath(path), (path, root))
    if not files:
        return Inputs([], notes)
    roots = {os.path.abspath(root) for _, root in files.values()}
    common = os.path.commonpath(sorted(roots))
    rels = {key: PurePosixPath(Path(os.path.relpath(key, common)).as_posix()) for key in files}
    stems = Counter(rel.with_suffix("") for rel in rels.values())
    result = []
    for key, (path, _) in files.items():
        rel = rels[key]
        out = rel.with_suffix("") if stems[rel.with_suffix("")] == 1 else rel
        result.append(InputFile(path, key, out))
    return Inputs(result, notes)


def _expand(argument: str, skip: str, found: list, notes: list, depth: int) -> None:
    if argument.startswith("@"):
        _read_list(argument[1:], skip, found, notes, depth)
        return
    path = os.path.expanduser(argument)
    if os.path.isdir(path):
        before = len(found)
        _walk(path, skip, found)
        if len(found) == before:
            notes.append(f"{argument}: no audio files in this folder")
    elif os.path.lexists(path):
        if Path(path).suffix.lower() in LIST_SUFFIXES:
            _read_list(path, skip, found, notes, depth)
        else:
            found.append((path, os.path.dirname(path) or "."))
    elif glob.has_magic(path):
        matches = sorted(glob.glob(path, recursive=True))
        root = _static_prefix(path)
        for match in matches:
            if os.path.isdir(match):
                _walk(match, skip, found, root)
            elif Path(match).suffix.lower() in AUDIO_SUFFIXES or not _is_wildcard_suffix(path):
                found.append((match, root))
        if not matches:
            notes.append(f"{argument}: matches no file")
    else:
        found.append((path, os.path.dirname(path) or "."))  # missing: its manifest line says so


def _walk(folder: str, skip: str, found: list, root: str | None = None) -> None:
    root = root or folder
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(current, d)) != skip)
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES:
                found.append((os.path.join(current, name), root))


def _read_list(list_path: str, skip: str, found: list, notes: list, depth: int) -> None:
    if depth > 4:
        raise QasrError(f"{list_path}: lists nest more than 4 deep; name the files directly")
    try:
        lines = Path(list_path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise QasrError(f"cannot read the list {list_path}: {reason}") from None
    before = len(found)
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            _expand(line, skip, found, notes, depth + 1)
    if len(found) == before:
        notes.append(f"{list_path}: the list names no file")


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard ("talks/**/*.mp3" → "talks")."""
    parts = Path(pattern).parts
    static = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        static.append(part)
    return os.path.join(*static) if static else "."


def _is_wildcard_suffix(pattern: str) -> bool:
    """True when the pattern leaves the suffix open ("talks/*"): only audio suffixes are taken then."""
    name = Path(pattern).name
    return glob.has_magic(Path(name).suffix) or not Path(name).suffix

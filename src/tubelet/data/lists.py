"""Reading the lists that say which videos a dataset holds and what their labels are.

Four sources, one result (:class:`VideoList`):

- video lists (``read_video_list``): one video a line, ``path label`` or ``path,label``, an
  optional header line (``path,label``, ``video label``, ...), label as an index or a class name,
  relative paths resolved against the list's folder, ``#`` comments and blank lines skipped.
  Class names come from the ``class_names`` argument, else from ``classes.txt`` beside the list
  (one name a line, line ``i`` = class ``i``), else, when labels are names, from the sorted
  distinct names in the list;
- Something-Something v2 JSON (``read_ssv2``): a labels file ``{"class name": "index"}`` and a
  split file ``[{"id": ..., "template": "Putting [something] on [something]"}, ...]``;
- Charades-style CSV (``read_charades``): multi-label, ``actions`` column ``"c092 11.90 21.20;..."``;
- class-per-folder trees (``read_video_folder``): ``ROOT/<class name>/<video>``.

A list that cannot be read fails at once with ``FileNotFoundError`` or ``ValueError`` naming the
file and line (or JSON entry) — before any training starts.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
# Words that mark the first line of a video list as a header, not a video.
_HEADER_WORDS = {"path", "video", "file", "filename", "video_path", "label", "class", "class_name", "label_id"}


@dataclass(frozen=True)
class VideoEntry:
    """One video: its file and its label (a class index, or a tuple of them when multi-label)."""

    path: Path
    label: int | tuple[int, ...]


@dataclass(frozen=True)
class VideoList:
    """The videos of one split, their class names, and where they were read from."""

    entries: tuple[VideoEntry, ...]
    class_names: tuple[str, ...]
    multi_label: bool = False
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> VideoEntry:
        return self.entries[index]

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a text file, one a line (line ``i`` is class ``i``; blank lines skipped)."""
    path = Path(path)
    _require_file(path, "class names file")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"{path}: class name {duplicate!r} appears twice")
    return names


def _split_line(line: str) -> tuple[str, str] | None:
    """``path,label`` or ``path label`` (the path may contain spaces; the label is the last field)."""
    parts = line.rsplit(",", 1) if "," in line else line.rsplit(None, 1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        return None
    return parts[0].strip(), parts[1].strip()


def _is_header(path_field: str, label_field: str) -> bool:
    return path_field.lower() in _HEADER_WORDS or label_field.lower() in _HEADER_WORDS


def read_video_list(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> VideoList:
    """Read a ``path label`` / ``path,label`` list (see the module docstring for the rules)."""
    path = Path(path)
    _require_file(path, "video list")
    rows: list[tuple[int, str, str]] = []  # (line number, video path, label text)
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split_line(line)
        if fields is None:
            raise ValueError(f"{path}, line {number}: expected 'path label' or 'path,label', got {line!r}")
        if not rows and _is_header(*fields):
            continue
        rows.append((number, *fields))
    if not rows:
        raise ValueError(f"{path}: the list holds no videos")

    if class_names is None and (path.parent / "classes.txt").is_file():
        class_names = read_class_names(path.parent / "classes.txt")
    # a label made of digits is always a class index; any other label is a class name
    named = sorted({label for _, _, label in rows if not label.isdigit()})
    if class_names is None and named:
        class_names = named
    if class_names is None:
        class_names = [str(i) for i in range(max(int(label) for _, _, label in rows) + 1)]
    names = tuple(class_names)
    index_of = {name: i for i, name in enumerate(names)}

    entries = []
    for number, video, label in rows:
        if label.isdigit():
            target = int(label)
            if target >= len(names):
                raise ValueError(f"{path}, line {number}: label {target} is out of range for {len(names)} classes")
        elif label in index_of:
            target = index_of[label]
        else:
            raise ValueError(f"{path}, line {number}: unknown class {label!r} (not among the {len(names)} class names)")
        entries.append(VideoEntry(path.parent / video, target))
    return VideoList(tuple(entries), names, multi_label=False, source=str(path))


def ssv2_class_name(template: str) -> str:
    """SSv2's class name of a template: the template with its brackets removed
    (``"Putting [something] on [something]"`` -> ``"Putting something on something"``)."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(
    split_json: str | os.PathLike,
    labels_json: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    *,
    extension: str = ".webm",
) -> VideoList:
    """Something-Something v2: ``labels_json`` maps class names to indices, ``split_json`` lists
    ``{"id", "template", ...}`` entries; videos are ``video_dir/<id><extension>`` (``video_dir``
    defaults to the split file's folder)."""
    split_json, labels_json = Path(split_json), Path(labels_json)
    _require_file(labels_json, "SSv2 labels file")
    _require_file(split_json, "SSv2 split file")
    labels = _load_json(labels_json)
    if not isinstance(labels, dict):
        raise ValueError(f"{labels_json}: expected an object mapping class names to indices")
    index_of: dict[str, int] = {}
    for name, index in labels.items():
        if not str(index).isdigit():
            raise ValueError(f"{labels_json}: class {name!r} has index {index!r}, expected a non-negative integer")
        index_of[name] = int(index)
    if sorted(index_of.values()) != list(range(len(index_of))):
        raise ValueError(f"{labels_json}: class indices must be 0..{len(index_of) - 1}, each once")
    names = tuple(sorted(index_of, key=index_of.__getitem__))

    items = _load_json(split_json)
    if not isinstance(items, list):
        raise ValueError(f"{split_json}: expected a list of videos")
    folder = Path(video_dir) if video_dir is not None else split_json.parent
    entries = []
    for number, item in enumerate(items):
        where = f"{split_json}, entry {number}"
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise ValueError(f"{where}: expected an object with 'id' and 'template', got {item!r:.80}")
        name = ssv2_class_name(str(item["template"]))
        if name not in index_of:
            raise ValueError(f"{where}: unknown class {name!r} (not in {labels_json})")
        entries.append(VideoEntry(folder / f"{item['id']}{extension}", index_of[name]))
    return VideoList(tuple(entries), names, multi_label=False, source=str(split_json))


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from error


def _charades_class(code: str) -> int:
    """``"c092"`` -> 92."""
    if len(code) < 2 or code[0] != "c" or not code[1:].isdigit():
        raise ValueError(f"action {code!r} is not a class code like 'c092'")
    return int(code[1:])


def read_charades(
    csv_path: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    *,
    extension: str = ".mp4",
) -> VideoList:
    """Charades-style multi-label CSV: columns ``id`` and ``actions`` (others ignored), actions
    ``"c092 11.90 21.20;c147 0.00 12.60"`` (class, start s, end s); a video's label is the tuple
    of its distinct classes (segment times are not used). Class names come from ``class_names``,
    else ``classes.txt`` or ``Charades_v1_classes.txt`` beside the CSV (``c000 Holding some
    clothes`` lines or bare names), else ``c000..cMAX``. Videos are ``video_dir/<id><extension>``
    (``video_dir`` defaults to the CSV's folder)."""
    csv_path = Path(csv_path)
    _require_file(csv_path, "Charades CSV")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if "id" not in fields or "actions" not in fields:
            raise ValueError(f"{csv_path}, line 1: expected columns 'id' and 'actions', got {fields}")
        rows = []
        for row in reader:
            number = reader.line_num
            try:
                actions = [a.split() for a in (row["actions"] or "").split(";") if a.strip()]
                classes = tuple(sorted({_charades_class(a[0]) for a in actions}))
            except ValueError as error:
                raise ValueError(f"{csv_path}, line {number}: {error}") from error
            if not row["id"]:
                raise ValueError(f"{csv_path}, line {number}: empty id")
            rows.append((number, row["id"], classes))
    if not rows:
        raise ValueError(f"{csv_path}: the CSV holds no videos")

    if class_names is None:
        for candidate in ("classes.txt", "Charades_v1_classes.txt"):
            if (csv_path.parent / candidate).is_file():
                class_names = [_strip_code(name) for name in read_class_names(csv_path.parent / candidate)]
                break
    if class_names is None:
        class_names = [f"c{i:03d}" for i in range(max((max(c, default=0) for _, _, c in rows), default=0) + 1)]
    names = tuple(class_names)
    folder = Path(video_dir) if video_dir is not None else csv_path.parent
    entries = []
    for number, video_id, classes in rows:
        if classes and classes[-1] >= len(names):
            raise ValueError(f"{csv_path}, line {number}: class c{classes[-1]:03d} is out of range for {len(names)} classes")
        entries.append(VideoEntry(folder / f"{video_id}{extension}", classes))
    return VideoList(tuple(entries), names, multi_label=True, source=str(csv_path))


def _strip_code(line: str) -> str:
    """``"c000 Holding some clothes"`` -> ``"Holding some clothes"``; bare names unchanged."""
    code, _, rest = line.partition(" ")
    return rest.strip() if rest and code[:1] == "c" and code[1:].isdigit() else line


def read_video_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> VideoList:
    """``ROOT/<class name>/<video>`` trees; videos are the files with a video extension (any depth
    below the class folder). Classes are ``class_names`` when given (a model's, or the training
    split's: each folder must be one of them, and one absent from the tree keeps its index), else the
    sorted sub-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    folders = sorted(child.name for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    videos = {name: [video for video in sorted((root / name).rglob("*"))
                     if video.is_file() and video.suffix.lower() in VIDEO_EXTENSIONS] for name in folders}
    names = tuple(class_names) if class_names is not None else tuple(folders)
    index_of = {name: i for i, name in enumerate(names)}
    for name in folders:
        if videos[name] and name not in index_of:
            raise ValueError(f"{root / name}: unknown class {name!r} (not among the {len(names)} class names)")
    entries = [VideoEntry(video, index_of[name]) for name in folders for video in videos[name]]
    if not entries:
        raise ValueError(f"{root}: no videos found in class folders (expected ROOT/<class>/<video>)")
    return VideoList(tuple(entries), names, multi_label=False, source=str(root))


def read_any(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> VideoList:
    """Pick the reader by what ``path`` is: a folder -> class-per-folder tree; ``.json`` -> SSv2
    split (labels from ``labels.json`` or ``something-something-v2-labels.json`` beside it);
    ``.csv`` with an ``actions`` column -> Charades; anything else -> a video list."""
    path = Path(path)
    if path.is_dir():
        return read_video_folder(path, class_names)
    _require_file(path, "video list")
    if path.suffix.lower() == ".json":
        for candidate in ("labels.json", "something-something-v2-labels.json"):
            if (path.parent / candidate).is_file() and (path.parent / candidate) != path:
                return read_ssv2(path, path.parent / candidate)
        raise FileNotFoundError(
            f"{path}: an SSv2 split needs its labels file beside it (labels.json or something-something-v2-labels.json)"
        )
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if "actions" in header:
            return read_charades(path, class_names=class_names)
    return read_video_list(path, class_names)

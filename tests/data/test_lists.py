"""Video lists, SSv2 JSON, Charades CSV, class folders: parsing and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tubelet.data.lists import (
    read_any,
    read_charades,
    read_class_names,
    read_ssv2,
    read_video_folder,
    read_video_list,
    ssv2_class_name,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_space_and_comma_lists_with_header_indices_and_relative_paths(tmp_path):
    spaced = write(tmp_path / "lists" / "train.txt", "# a comment\n\nvideos/a.mp4 0\n/abs/b c.mp4 2\n")
    result = read_video_list(spaced)
    assert [e.path for e in result] == [tmp_path / "lists" / "videos/a.mp4", Path("/abs/b c.mp4")]
    assert [e.label for e in result] == [0, 2]
    assert result.class_names == ("0", "1", "2") and not result.multi_label and len(result) == 2
    comma = write(tmp_path / "val.csv", "path,label\nx.mp4,1\ny z.mp4, 0\n")
    assert [(e.path.name, e.label) for e in read_video_list(comma)] == [("x.mp4", 1), ("y z.mp4", 0)]


def test_class_names_from_classes_txt_argument_or_list(tmp_path):
    write(tmp_path / "classes.txt", "walking\nrunning\n\njumping\n")
    listed = write(tmp_path / "train.csv", "video,label\na.mp4,running\nb.mp4,2\nc.mp4,walking\n")
    result = read_video_list(listed)
    assert result.class_names == ("walking", "running", "jumping") and result.num_classes == 3
    assert [e.label for e in result] == [1, 2, 0]
    assert [e.label for e in read_video_list(listed, class_names=["running", "walking", "x"])] == [0, 2, 1]
    alone = write(tmp_path / "other" / "list.txt", "a.mp4 zebra\nb.mp4 ant\n")
    named = read_video_list(alone)
    assert named.class_names == ("ant", "zebra") and [e.label for e in named] == [1, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.mp4 0\njustonefield\n", r"list.txt, line 2: expected 'path label' or 'path,label', got 'justonefield'"),
        ("a.mp4 0\n\nb.mp4 ,\n", r"list.txt, line 3: expected 'path label'"),
        ("a.mp4 walking\nb.mp4 flying\n", r"list.txt, line 2: unknown class 'flying'"),
        ("a.mp4 0\nb.mp4 7\n", r"list.txt, line 2: label 7 is out of range for 2 classes"),
        ("# only a comment\n", r"list.txt: the list holds no videos"),
    ],
)
def test_list_errors_name_file_and_line(tmp_path, text, message):
    write(tmp_path / "classes.txt", "walking\nrunning\n")
    with pytest.raises(ValueError, match=message):
        read_video_list(write(tmp_path / "list.txt", text))


def test_missing_list_and_duplicate_class_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"video list .*nowhere.txt does not exist"):
        read_video_list(tmp_path / "nowhere.txt")
    with pytest.raises(ValueError, match=r"classes.txt: class name 'a' appears twice"):
        read_class_names(write(tmp_path / "classes.txt", "a\nb\na\n"))


def ssv2_files(tmp_path: Path, items: list) -> tuple[Path, Path]:
    labels = {"Putting something on something": "1", "Pushing something from left to right": "0"}
    return (
        write(tmp_path / "train.json", json.dumps(items)),
        write(tmp_path / "labels.json", json.dumps(labels)),
    )


def test_ssv2_templates_lose_their_brackets(tmp_path):
    assert ssv2_class_name("Putting [something] on [something]") == "Putting something on something"
    split, labels = ssv2_files(
        tmp_path,
        [
            {"id": "78687", "label": "putting a pen on a book", "template": "Putting [something] on [something]", "placeholders": ["a pen", "a book"]},
            {"id": "42", "label": "pushing cup", "template": "Pushing [something] from left to right", "placeholders": ["cup"]},
        ],
    )
    result = read_ssv2(split, labels, video_dir=tmp_path / "videos")
    assert result.class_names == ("Pushing something from left to right", "Putting something on something")
    assert [(e.path, e.label) for e in result] == [(tmp_path / "videos/78687.webm", 1), (tmp_path / "videos/42.webm", 0)]
    assert read_any(split)[0].path == tmp_path / "78687.webm"


def test_ssv2_errors_name_entry(tmp_path):
    split, labels = ssv2_files(tmp_path, [{"id": "1", "template": "Putting [something] on [something]"}, {"id": "2", "template": "Dropping [something]"}])
    with pytest.raises(ValueError, match=r"train.json, entry 1: unknown class 'Dropping something'"):
        read_ssv2(split, labels)
    split, labels = ssv2_files(tmp_path, [{"id": "1"}])
    with pytest.raises(ValueError, match=r"train.json, entry 0: expected an object with 'id' and 'template'"):
        read_ssv2(split, labels)
    write(split, '[{"id": "1",\n "template": }]')
    with pytest.raises(ValueError, match=r"train.json, line 2: invalid JSON"):
        read_ssv2(split, labels)


CHARADES = """id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length
46GP8,HR43,Kitchen,6,7,Yes,A person cooks.,food,A person cooks.,c092 11.90 21.20;c147 0.00 12.60;c092 25.00 30.00,24.83
N11GT,0KZ7,Stairs,6,7,Yes,"Someone walks, then sits.",stairs,x,,12.00
"""


def test_charades_multi_label(tmp_path):
    csv_path = write(tmp_path / "Charades_v1_train.csv", CHARADES)
    write(tmp_path / "Charades_v1_classes.txt", "\n".join(f"c{i:03d} action {i}" for i in range(157)))
    result = read_charades(csv_path, video_dir=tmp_path / "v")
    assert result.multi_label and result.num_classes == 157 and result.class_names[92] == "action 92"
    assert [(e.path, e.label) for e in result] == [(tmp_path / "v/46GP8.mp4", (92, 147)), (tmp_path / "v/N11GT.mp4", ())]
    assert read_any(csv_path).multi_label


def test_charades_errors_name_line(tmp_path):
    bad = write(tmp_path / "c.csv", CHARADES.replace("c147 0.00", "x147 0.00"))
    with pytest.raises(ValueError, match=r"c.csv, line 2: action 'x147' is not a class code"):
        read_charades(bad)
    with pytest.raises(ValueError, match=r"c.csv, line 2: class c147 is out of range for 100 classes"):
        read_charades(write(tmp_path / "c.csv", CHARADES), class_names=[str(i) for i in range(100)])
    with pytest.raises(ValueError, match=r"line 1: expected columns 'id' and 'actions'"):
        read_charades(write(tmp_path / "c.csv", "video,label\n"))


def test_class_folders(tmp_path):
    for name in ["b_class/x.mp4", "a_class/y.webm", "a_class/sub/z.mkv", "a_class/notes.txt", "b_class/w.avi"]:
        write(tmp_path / "root" / name, "")
    result = read_video_folder(tmp_path / "root")
    assert result.class_names == ("a_class", "b_class")
    assert [(e.path.relative_to(tmp_path / "root").as_posix(), e.label) for e in result] == [
        ("a_class/sub/z.mkv", 0),
        ("a_class/y.webm", 0),
        ("b_class/w.avi", 1),
        ("b_class/x.mp4", 1),
    ]
    assert read_any(tmp_path / "root").class_names == ("a_class", "b_class")
    with pytest.raises(ValueError, match="no videos found in class folders"):
        read_video_folder(tmp_path / "root" / "a_class" / "sub")


def test_class_folders_take_the_class_names_they_are_given(tmp_path):
    """A validation or test tree is labelled by the model's (or the training split's) classes, not
    by its own sorted folder names, which miss a class or order them otherwise."""
    for name in ["right/x.mp4", "left/y.mp4", "left/z.mp4"]:
        write(tmp_path / "val" / name, "")
    result = read_any(tmp_path / "val", class_names=["up", "right", "left"])
    assert result.class_names == ("up", "right", "left")
    assert [(e.path.name, e.label) for e in result] == [("y.mp4", 2), ("z.mp4", 2), ("x.mp4", 1)]
    with pytest.raises(ValueError, match=r"val/left: unknown class 'left' \(not among the 2 class names\)"):
        read_video_folder(tmp_path / "val", class_names=["up", "right"])


def test_read_any_picks_video_list_for_plain_csv(tmp_path):
    assert read_any(write(tmp_path / "train.csv", "path,label\na.mp4,0\n"))[0].label == 0
    with pytest.raises(FileNotFoundError, match="labels file beside it"):
        read_any(write(tmp_path / "x" / "split.json", "[]"))

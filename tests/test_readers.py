"""Dataset readers on the real shared files (MVQA1k release, SLAKE) and on small bad inputs."""

from __future__ import annotations

import collections
import json
import re

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from hypothesis import assume, given
from hypothesis import strategies as st

from mvqa.data.images import resolve_image_path
from mvqa.data.loading import load_dataset
from mvqa.data.readers import (
    RELEASE_TRACE_COLUMNS,
    parse_question_options,
    read_csv_dataset,
    read_pmc_vqa,
    read_slake,
    strip_choice_prefix,
)

PREFIX = re.compile(r"^\W*[A-E]\s*:")


def write_csv(path, rows: list[dict]) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def pmc_row(image="a.jpg", question="What modality?", answer="CT", label="A", **more) -> dict:
    return {"Figure_path": image, "Question": question, "Answer": answer, "Choice A": " A: CT ",
            "Choice B": " B: MRI ", "Choice C": " C: X-ray ", "Choice D": " D: Ultrasound ",
            "Answer_label": label,
            **more}


# --------------------------------------------------------------------------------------- the MVQA1k release

@pytest.fixture(scope="module")
def release(shared_data):
    return read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv", name="mvqa1k",
                        extra_columns=RELEASE_TRACE_COLUMNS)


def test_release_rows_labels_and_clean_choices(release):
    items, stats = release
    assert len(items) == 1000 and stats.n_in == stats.n_out == 1000 and not stats.dropped
    assert collections.Counter(it.answer_label for it in items) == {"B": 346, "C": 325, "D": 187, "A": 142}
    assert all(len(it.choices) == 4 for it in items)
    choices = [c for it in items for c in it.choices]
    assert not [c for c in choices if PREFIX.match(c) or c != c.strip() or not c]
    # The answer text equals the labelled choice once prefixes and quote artefacts are gone.
    assert all(it.answer == it.choices[it.answer_index] for it in items)
    assert stats.metrics["answer_text_mismatch"] == 0
    assert len({it.id for it in items}) == 1000 and items[0].id == "mvqa1k:0"
    assert len({it.image for it in items}) == 989


def test_release_real_rows(release, shared_data):
    items, _ = release
    first = items[0]
    assert first.image == "PMC3502818_fig3.jpg"
    assert first.choices == ["CT scan", "X-Ray", "MRI", "Ultrasound"] and first.answer_label == "C"
    assert first.image_root == str(shared_data / "mvqa1k")
    # A real row cut out of a stringified list: " 'A: Mild stenosis ...' '" and "aneurysm' '".
    (odd,) = [it for it in items if it.image == "PMC4141338_Fig6.jpg"]
    assert odd.choices[:2] == ["Mild stenosis of the right pulmonary artery",
                               "Main pulmonary artery aneurysm"]
    assert odd.choices[3].endswith("pulmonary artery") and odd.answer == "Main pulmonary artery aneurysm"
    assert any("Crohn's disease" in it.choices for it in items)  # an inner apostrophe is kept


def test_release_extra_carries_traces(shared_data, release):
    items, _ = release
    for it in items:
        assert set(it.extra) == set(RELEASE_TRACE_COLUMNS)
        assert it.extra["generated_answer"] == it.answer_label
        assert "<think>" in it.extra["raw_output"]
        assert re.search(rf"<answer>\s*{it.answer_label}\s*</answer>", it.extra["raw_output"])


# -------------------------------------------------------------------------------------------------- SLAKE

@pytest.fixture(scope="module")
def slake_test(shared_data):
    """The test split made multiple choice (`open_to_mcq`): the reader's former default, now asked for."""
    return read_slake(shared_data / "slake", split="test", seed=0, open_to_mcq=True)


def test_slake_test_split_counts_and_images(slake_test, shared_data):
    items, stats = slake_test
    assert len(items) == 1061
    types = collections.Counter(it.extra["answer_type"] for it in items)
    assert types == {"CLOSED": 416, "OPEN": 645}
    m = stats.metrics
    assert m["closed_yes_no"] + m["closed_parsed_options"] + m["closed_not_mcq"] == 416
    assert (m["closed_yes_no"], m["closed_parsed_options"], m["closed_not_mcq"]) == (355, 60, 1)
    assert m["open_to_mcq"] == 645 and m["open_kept_open"] == 0
    assert m["conversions"] == {"closed_yes_no->mcq": 355, "closed_parsed_options->mcq": 60, "open->mcq": 645}
    assert sum(m["n_choices"].values()) == 1061 - m["closed_not_mcq"]
    assert m["open_fewer_choices"] == sum(1 for it in items if it.extra["answer_type"] == "OPEN"
                                          and len(it.choices) < 4) > 0
    assert all(resolve_image_path(it).is_file() for it in items)
    assert {it.image_root for it in items} == {str(shared_data / "slake" / "imgs")}
    assert {it.modality for it in items} == {"CT", "MRI", "X-Ray"}
    assert all(it.content_type and it.split == "test" for it in items)


def test_slake_closed_questions(slake_test):
    items, stats = slake_test
    by_id = {it.id: it for it in items}
    yes_no = [it for it in items if it.extra["source_answer"].lower() in ("yes", "no")]
    assert all(it.choices == ["Yes", "No"] and it.answer == it.extra["source_answer"].capitalize()
               for it in yes_no)
    # Real questions naming their options.
    assert by_id["slake:11971"].choices == ["heart", "lung"] and by_id["slake:11971"].answer_label == "A"
    assert by_id["slake:12116"].choices == ["spleen", "lung",
                                            "liver"] and by_id["slake:12116"].answer == "liver"
    assert by_id["slake:12878"].choices == ["left", "top",
                                            "upper left"] and by_id["slake:12878"].answer == "top"
    assert by_id["slake:12651"].choices == ["T1 weighted", "T2 weighted"]
    assert by_id["slake:12651"].answer == "T2 weighted" and by_id["slake:12651"].extra[
        "source_answer"] == "T2"
    # "Which is bigger in this image, kidney or spleen?" -> "Liver": the answer is not an option, kept closed.
    (kept,) = stats.metrics["closed_not_mcq_ids"]
    assert by_id[kept].kind == "closed" and by_id[kept].answer not in ("kidney", "spleen")


@pytest.mark.parametrize("question, options", [
    ("Which organ is abnormal, heart or lung?", ["heart", "lung"]),
    ("Which is the biggest in this image,lung,liver or heart?", ["lung", "liver", "heart"]),
    ("Which is the biggest in this image, spleen,lung, or liver?", ["spleen", "lung", "liver"]),
    ("Which is bigger, left kidney or spleen ?", ["left kidney", "spleen"]),
    ("Which plane is the image scanned, transverse plane or coronal plane?",
     ["transverse plane", "coronal plane"]),
    ("Is the abnormality hyperdense or hypodense?", ["hyperdense", "hypodense"]),
    ("Is brain tumor white or gray relative to other tissues?", ["white", "gray"]),
    ("Is this a T1 weighted or T2 weighted MRI image?", ["T1 weighted", "T2 weighted"]),
    ("Does the picture contain liver?", None),
    # a clause, not an option
    ("In this image, which organ is largest in the abdomen, liver or spleen?", None),
])
def test_parse_question_options(question, options):
    assert parse_question_options(question) == options


def test_slake_open_distractors_deterministic_and_same_content_type(slake_test, shared_data):
    items, _ = slake_test
    raw = json.loads((shared_data / "slake" / "test.json").read_text())
    pool = collections.defaultdict(set)
    for r in raw:
        if r["answer_type"] == "OPEN":
            pool[r["content_type"]].add(r["answer"].strip())
    open_items = [it for it in items if it.extra["answer_type"] == "OPEN"]
    for it in open_items:
        assert it.answer == it.extra["source_answer"] and it.choices[it.answer_index] == it.answer
        assert set(it.choices) <= pool[it.content_type] and len(set(it.choices)) == len(it.choices)
    assert len({it.answer_label for it in open_items}) == 4  # the answer's position is shuffled too

    again, _ = read_slake(shared_data / "slake", split="test", seed=0, open_to_mcq=True)
    assert [it.choices for it in again] == [it.choices for it in items]
    limited, _ = read_slake(shared_data / "slake", split="test", seed=0, limit=50, open_to_mcq=True)
    assert [it.choices for it in limited] == [it.choices for it in items[:50]]
    other, _ = read_slake(shared_data / "slake", split="test", seed=1, open_to_mcq=True)
    changed = sum(a.choices != b.choices for a, b in zip(items, other) if a.extra["answer_type"] == "OPEN")
    assert changed > len(open_items) // 2


def test_slake_default_keeps_open_open_and_bad_split(shared_data):
    items, stats = read_slake(shared_data / "slake", split="validate")
    opened = [it for it in items if it.extra["answer_type"] == "OPEN"]
    assert opened and all(it.kind == "open" and it.answer_label is None and not it.choices for it in opened)
    assert stats.metrics["open_kept_open"] == len(opened) and stats.metrics["open_to_mcq"] == 0
    assert stats.metrics["conversions"] == {}
    with pytest.raises(ValueError, match="SLAKE split 'val'"):
        read_slake(shared_data / "slake", split="val")


def test_slake_missing_key_names_file_and_row(tmp_path):
    (tmp_path / "test.json").write_text(json.dumps([{"img_name": "x/source.jpg", "question": "Q?"}]))
    with pytest.raises(ValueError, match=r"test\.json: row 0: missing keys \['answer', 'answer_type'"):
        read_slake(tmp_path, split="test")


# ----------------------------------------------------------------------------------------------- bad input

def test_missing_columns_named_with_columns_present(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [{"Figure_path": "a.jpg", "Question": "Q?", "Answer": "CT"}])
    with pytest.raises(ValueError) as err:
        read_pmc_vqa(path)
    message = str(err.value)
    assert "bad.csv" in message
    assert "missing columns ['Answer_label', 'Choice A', 'Choice B', 'Choice C', 'Choice D']" in message
    assert "columns present: ['Figure_path', 'Question', 'Answer']" in message


def test_missing_extra_column_is_an_error(tmp_path):
    path = write_csv(tmp_path / "x.csv", [pmc_row()])
    with pytest.raises(ValueError, match=r"missing columns \['raw_output'\]"):
        read_pmc_vqa(path, extra_columns=["raw_output"])


def test_duplicate_ids_name_file_and_both_rows(tmp_path):
    # An id reused for another row (an exact repeat of a row, id included, is a duplicate row instead).
    path = write_csv(tmp_path / "dup.csv",
                     [pmc_row(id="q1"), pmc_row(id="q2"), pmc_row(id="q1", image="b.jpg")])
    with pytest.raises(ValueError, match=r"dup\.csv: duplicate id 'q1' at rows 0 and 2"):
        read_pmc_vqa(path)


@pytest.mark.parametrize("image", ["../secret.jpg", "imgs/../../x.jpg", "/etc/passwd", "C:\\x.jpg", ""])
def test_image_path_leaving_root_is_rejected(tmp_path, image):
    path = write_csv(tmp_path / "esc.csv", [pmc_row(), pmc_row(image=image)])
    with pytest.raises(ValueError,
                       match=r"esc\.csv: row 1: (image path .* leaves the image root|empty image path)"):
        read_pmc_vqa(path)


def test_empty_csv_is_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: empty CSV"):
        read_pmc_vqa(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("Figure_path,Question,Answer,Choice A,Choice B,Answer_label\n")
    with pytest.raises(ValueError, match=r"header\.csv: no data rows"):
        read_pmc_vqa(tmp_path / "header.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_pmc_vqa(tmp_path / "nope.csv")


@pytest.mark.parametrize("label", ["E", "", "AB", "1"])
def test_bad_answer_label_names_file_and_row(tmp_path, label):
    path = write_csv(tmp_path / "lab.csv", [pmc_row(), pmc_row(), pmc_row(label=label)])
    with pytest.raises(ValueError,
                       match=r"lab\.csv: row 2: answer label .* is not one of \['A', 'B', 'C', 'D'\]"):
        read_pmc_vqa(path)


def test_pmc_record_columns_case_and_fewer_choices(tmp_path):
    rows = [pmc_row(label="b", modality="CT", content_type="modality", split="val", **{"Choice D": ""}),
            pmc_row(label="A")]
    path = write_csv(tmp_path / "pmc.csv", rows)
    frame = pd.read_csv(path).rename(columns={"Figure_path": "FIGURE_PATH", "Question": "question"})
    frame.to_csv(path, index=False)
    items, stats = read_pmc_vqa(path, name="t", split="train", image_root="/imgs", limit=1)
    (item,) = items
    assert item.choices == ["CT", "MRI", "X-ray"] and item.answer_label == "B" and item.image_root == "/imgs"
    assert (item.modality, item.content_type, item.split, item.id) == ("CT", "modality", "val", "t:0")
    assert stats.metrics["answer_text_mismatch"] == 1 and stats.warnings  # label B (MRI) but answer text CT


def test_gap_in_choices_is_an_error(tmp_path):
    path = write_csv(tmp_path / "gap.csv", [pmc_row(**{"Choice B": " "})])
    with pytest.raises(ValueError, match=r"gap\.csv: row 0: empty choice B before a non-empty one"):
        read_pmc_vqa(path)


def test_csv_reader_maps_columns_and_finds_label_from_answer(tmp_path):
    rows = [{"img": "x.png", "q": "Which organ?", "a": "liver", "o1": "Heart", "o2": "Liver", "o3": "Lung"},
            {"img": "y.png", "q": "Describe it.", "a": "a mass", "o1": "", "o2": "", "o3": ""}]
    path = write_csv(tmp_path / "any.csv", rows)
    cols = {"image": "IMG", "question": "q", "answer": "a", "choices": ["o1", "o2", "o3"]}
    items, _ = read_csv_dataset(path, cols, name="any", image_root=str(tmp_path))
    assert items[0].choices == ["Heart", "Liver", "Lung"] and items[0].answer_label == "B"
    assert items[1].is_free_text and items[1].answer == "a mass"
    with pytest.raises(ValueError, match=r"any\.csv: the column mapping needs \['question'\]"):
        read_csv_dataset(path, {"image": "img", "answer": "a"})
    with pytest.raises(ValueError, match=r"unknown column mapping keys \['imgae'\]"):
        read_csv_dataset(path, {**cols, "imgae": "img"})
    bad = write_csv(tmp_path / "nomatch.csv", [{**rows[0], "a": "spleen"}])
    with pytest.raises(ValueError, match=r"nomatch\.csv: row 0: answer 'spleen' matches 0 of the choices"):
        read_csv_dataset(bad, cols)


# ------------------------------------------------------------------------------------------ prefix property

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="'"), min_size=1)


@given(letter=st.sampled_from("ABCDE"), text=_TEXT, pad=st.sampled_from(["", " ", "  ", "\t"]),
       sep=st.sampled_from([":", ": ", " : ", ":  "]))
def test_prefix_stripping_property(letter, text, pad, sep):
    text = text.strip()
    assume(text)
    assert strip_choice_prefix(f"{pad}{letter}{sep}{text}{pad}", letter) == text  # the prefix goes, once
    assert strip_choice_prefix(f"{pad}'{letter}{sep}{text}' '", letter) == text  # with PMC's quote artefact
    if not re.match(rf"{letter}\s*:", text):
        assert strip_choice_prefix(f"{pad}{text}{pad}", letter) == text  # no prefix: only spaces go
    other = "ABCDE"[("ABCDE".index(letter) + 1) % 5]
    # another letter's prefix stays
    assert strip_choice_prefix(f"{other}:{text}", letter) == f"{other}:{text}"


# ---------------------------------------------------------------------------------------------- config

def test_compose_release_yields_the_1000_items(shared_data, compose):
    cfg = compose("generate", ["dataset=mvqa1k_release"])
    items, stats = load_dataset(cfg.dataset)
    assert len(items) == 1000 and stats.stage == "load"
    assert items[0].source == "mvqa1k_release" and set(items[0].extra) == set(RELEASE_TRACE_COLUMNS)


def test_compose_misspelt_key_fails(compose):
    with pytest.raises(ConfigCompositionException, match="pathh"):
        compose("generate", ["dataset=mvqa1k_release", "dataset.pathh=x"])
    with pytest.raises(ConfigCompositionException, match="imgae"):
        compose("generate", ["dataset=csv", "dataset.columns.imgae=x"])


def test_compose_slake_csv_and_curated(shared_data, compose, tmp_path):
    cfg = compose("evaluate", ["dataset=slake", "dataset.limit=5", "seed=3"])
    items, _ = load_dataset(cfg.dataset)
    assert len(items) == 5 and cfg.dataset.seed == 3
    path = write_csv(tmp_path / "mine.csv",
                     [{"img": "x.png", "q": "Which?", "a": "B2", "o1": "B1", "o2": "B2"}])
    cfg = compose("train", ["dataset=csv", f"dataset.path={path}", "dataset.columns.image=img",
                            "dataset.columns.question=q", "dataset.columns.answer=a",
                            "dataset.columns.choices=[o1,o2]"])
    (item,), _ = load_dataset(cfg.dataset)
    assert item.choices == ["B1", "B2"] and item.answer_label == "B" and item.id == "csv:0"
    final = write_csv(tmp_path / "final.csv",
                      [pmc_row(id="s:7", generated_reasoning="r", generated_answer="A",
                                                       raw_output="<answer>A</answer>")])
    cfg = compose("train", ["dataset=curated", f"dataset.path={final}"])
    (item,), _ = load_dataset(cfg.dataset)
    assert item.id == "s:7" and item.extra["raw_output"] == "<answer>A</answer>" and item.source == "curated"

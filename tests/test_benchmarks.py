"""The benchmark entries (VQA-RAD, SLAKE, PathVQA, PMC-VQA test, OmniMedVQA, MMMU, VLMEvalKit TSV) on small
files built here in each public layout (real PNG/JPEG bytes), and SLAKE on the real shared copy."""

from __future__ import annotations

import base64
import io
import json

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mvqa.data import benchmarks
from mvqa.data.benchmarks import (
    LayoutError,
    read_mmmu,
    read_omnimedvqa,
    read_path_vqa,
    read_pmc_vqa_test,
    read_vlmevalkit_tsv,
    read_vqa_rad,
)
from mvqa.data.images import load_image, resolve_image_path, store_image_bytes
from mvqa.data.loading import load_dataset
from mvqa.data.readers import read_csv_dataset, read_slake
from mvqa.data.records import kind_counts


def image_bytes(shade: int, fmt: str = "PNG", size=(8, 6)) -> bytes:
    pixels = np.full((size[1], size[0], 3), shade, np.uint8)
    pixels[0, 0] = (255 - shade, 0, shade)  # one odd pixel, so loading is checked against the real content
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def hub_parquet(path, rows: list[dict], image_columns=("image",)) -> None:
    """A parquet file as the Hub writes it: `datasets` Image features (bytes embedded) and string columns."""
    features = datasets.Features(
        {k: datasets.Image() if k in image_columns else datasets.Value("string") for k in rows[0]}
    )
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    for k in image_columns:
        columns[k] = [None if b is None else {"bytes": b, "path": None} for b in columns[k]]
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))


FREE_TEXT_ROWS = [
    {"image": image_bytes(10), "question": "Is there a fracture?", "answer": "yes"},
    {"image": image_bytes(20, "JPEG"), "question": "Where is the lesion?", "answer": "left lower lobe"},
    {"image": image_bytes(10), "question": "Is the heart enlarged?", "answer": "No"},  # same image as row 0
]


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "image-cache"


# ------------------------------------------------------------------------------------------------- VQA-RAD


def test_vqa_rad_hub_parquet_kinds_images_and_cache(tmp_path, cache):
    hub_parquet(tmp_path / "vqa_rad" / "data" / "test-00000-of-00001.parquet", FREE_TEXT_ROWS)
    hub_parquet(tmp_path / "vqa_rad" / "data" / "train-00000-of-00001.parquet", FREE_TEXT_ROWS[:1])
    items, stats = read_vqa_rad(tmp_path / "vqa_rad", split="test", image_cache=cache)
    assert [it.kind for it in items] == ["closed", "open", "closed"]
    assert [it.answer for it in items] == ["yes", "left lower lobe", "No"]
    assert [it.id for it in items] == ["vqa_rad:test:0", "vqa_rad:test:1", "vqa_rad:test:2"]
    assert stats.n_in == stats.n_out == 3 and {it.split for it in items} == {"test"}
    # Content-addressed: rows 0 and 2 share one file; the JPEG keeps its format.
    assert items[0].image == items[2].image != items[1].image and items[1].image.endswith(".jpg")
    assert len(list(cache.rglob("*.*"))) == 2
    pixels = np.asarray(load_image(items[0]))
    assert (
        pixels.shape == (6, 8, 3) and tuple(pixels[0, 0]) == (245, 0, 10) and tuple(pixels[1, 1]) == (10,) * 3
    )
    assert items[1].image_root == str(cache) and resolve_image_path(items[1]).is_file()
    first = resolve_image_path(items[0]).stat().st_mtime_ns
    again, _ = read_vqa_rad(tmp_path / "vqa_rad", split="train", image_cache=cache)
    assert again[0].image == items[0].image and resolve_image_path(items[0]).stat().st_mtime_ns == first


def test_vqa_rad_osf_json_answer_type_and_official_split(tmp_path, cache):
    root = tmp_path / "osf"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    (root / "VQA_RAD Image Folder" / "synpic1.jpg").write_bytes(image_bytes(50, "JPEG"))
    base = {"image_name": "synpic1.jpg", "image_organ": "CHEST", "question_type": "PRES"}
    rows = [
        {
            **base,
            "qid": 1,
            "question": "Is this normal?",
            "answer": "No",
            "answer_type": "CLOSED",
            "phrase_type": "test_freeform",
        },
        # CLOSED though not yes/no: the column says so, the answer alone would have made it open
        {
            **base,
            "qid": 2,
            "question": "Left or right?",
            "answer": "left",
            "answer_type": "closed ",
            "phrase_type": "test_para",
        },
        {
            **base,
            "qid": 3,
            "question": "What organ?",
            "answer": 2,
            "answer_type": "OPEN",
            "phrase_type": "test_freeform",
        },
        {
            **base,
            "qid": 4,
            "question": "Is it a PA film?",
            "answer": "yes",
            "answer_type": "OPEN",
            "phrase_type": "freeform",
        },
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    test, _ = read_vqa_rad(root, split="test", image_cache=cache)
    assert [(it.id, it.kind, it.answer) for it in test] == [
        ("vqa_rad:1", "closed", "No"),
        ("vqa_rad:2", "closed", "left"),
        ("vqa_rad:3", "open", "2"),
    ]
    assert test[0].modality == "CHEST" and load_image(test[0]).size == (8, 6)
    (train,), _ = read_vqa_rad(root, split="train", image_cache=cache)
    assert train.id == "vqa_rad:4" and train.kind == "open"  # the column wins over the yes/no answer
    rows[1]["answer_type"] = "MAYBE"
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    with pytest.raises(
        ValueError, match=r"Public\.json: row 1: answer_type: answer type 'MAYBE', expected CLOSED"
    ):
        read_vqa_rad(root, split="test", image_cache=cache)


def test_vqa_rad_wrong_layout_names_the_layouts(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as err:
        read_vqa_rad(tmp_path / "empty", image_cache=cache)
    message = str(err.value)
    assert "VQA-RAD" in message and str(tmp_path / "empty") in message
    assert "data/{train,test}-*.parquet" in message and "VQA_RAD Dataset Public.json" in message
    with pytest.raises(ValueError, match="VQA-RAD split 'validation'"):
        read_vqa_rad(tmp_path / "empty", split="validation")


def test_missing_column_names_file_and_column(tmp_path, cache):
    rows = [{"image": image_bytes(1), "query": "Is it?", "answer": "yes"}]
    hub_parquet(tmp_path / "rad" / "data" / "test-00000-of-00001.parquet", rows)
    with pytest.raises(ValueError) as err:
        read_vqa_rad(tmp_path / "rad", image_cache=cache)
    assert "test-00000-of-00001.parquet: missing columns ['question']" in str(err.value)
    assert "columns present: ['image', 'query', 'answer']" in str(err.value)


def test_hub_id_offline_and_failing_give_clear_messages(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ValueError,
        match=r"'someone/vqa-rad' is no local folder, and as a Hugging Face Hub id it "
        r"cannot be loaded offline .*data/\{train,test\}-\*\.parquet",
    ):
        read_vqa_rad("someone/vqa-rad", image_cache=cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/path-vqa' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        ValueError,
        match=r"PathVQA: .*loading it as a Hugging Face Hub id failed "
        r"\(ConnectionError: Couldn't reach",
    ):
        read_path_vqa("someone/path-vqa", image_cache=cache)
    assert not benchmarks.is_hub_id("./someone/x") and not benchmarks.is_hub_id("/abs/x")
    with pytest.raises(ValueError, match=r"SLAKE: .*'BoKelvin/SLAKE' is no local folder.*<path>/imgs/"):
        read_slake("BoKelvin/SLAKE")


# ------------------------------------------------------------------------------------------------- PathVQA


def test_path_vqa_pandas_parquet_splits(tmp_path, cache):
    """A parquet written by pandas (image as a {bytes, path} struct, no Hub metadata) reads the same."""
    data = tmp_path / "pvqa" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        frame = pd.DataFrame(
            [
                {
                    "image": {"bytes": image_bytes(30 + i), "path": f"{i}.png"},
                    "question": f"Q{i}?",
                    "answer": "yes" if i % 2 else "gland",
                }
                for i in range(n)
            ]
        )
        frame.to_parquet(data / f"{split}-00000-of-00001.parquet")
    sizes = {
        s: len(read_path_vqa(tmp_path / "pvqa", split=s, image_cache=cache)[0])
        for s in ("train", "validation", "test")
    }
    assert sizes == {"train": 3, "validation": 2, "test": 1}
    items, _ = read_path_vqa(tmp_path / "pvqa", split="train", image_cache=cache, limit=2)
    assert kind_counts(items) == {"mcq": 0, "closed": 1, "open": 1} and items[1].split == "train"
    assert load_image(items[1]).getpixel((1, 1)) == (31, 31, 31)


# --------------------------------------------------------------------------------------------- PMC-VQA test


def test_pmc_vqa_test_folder_layout(tmp_path):
    root = tmp_path / "PMC-VQA"
    (root / "images").mkdir(parents=True)
    (root / "images" / "PMC1_fig1.jpg").write_bytes(image_bytes(70, "JPEG"))
    row = {
        "Figure_path": "PMC1_fig1.jpg",
        "Question": "Which modality?",
        "Answer": "CT",
        "Choice A": " A: CT ",
        "Choice B": " B: MRI ",
        "Choice C": " C: X-ray ",
        "Choice D": " D: PET ",
        "Answer_label": "A",
    }
    pd.DataFrame([row]).to_csv(root / "test_clean.csv", index=False)
    (item,), _ = read_pmc_vqa_test(root)
    assert item.kind == "mcq" and item.choices == ["CT", "MRI", "X-ray", "PET"] and item.split == "test"
    assert load_image(item).size == (8, 6)
    (root / "test_clean.csv").unlink()
    with pytest.raises(
        LayoutError,
        match=r"PMC-VQA: .*test_clean\.csv: missing, images/: found.*Expected "
        r"<path>/test_clean\.csv",
    ):
        read_pmc_vqa_test(root)


# ---------------------------------------------------------------------------------------------- OmniMedVQA


def test_omnimedvqa_json_layout_subsets_and_drops(tmp_path):
    root = tmp_path / "OmniMedVQA"
    (root / "Images" / "Chest CT Scan").mkdir(parents=True)
    (root / "Images" / "Chest CT Scan" / "a.png").write_bytes(image_bytes(90))
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    base = {
        "image_path": "Images/Chest CT Scan/a.png",
        "question_type": "Modality Recognition",
        "modality_type": "CT",
        "dataset": "Chest CT Scan",
    }
    rows = [
        {
            **base,
            "question_id": "c1",
            "question": "What modality?",
            "gt_answer": "CT",
            "option_A": "MRI",
            "option_B": "CT",
            "option_C": "X-ray",
            "option_D": "PET",
        },
        {
            **base,
            "question_id": "c2",
            "question": "Normal?",
            "gt_answer": "No",
            "option_A": "Yes",
            "option_B": "No",
        },
        {
            **base,
            "question_id": "c3",
            "question": "Which?",
            "gt_answer": "Ultrasound",
            "option_A": "MRI",
            "option_B": "CT",
        },
    ]
    (qa / "Chest CT Scan.json").write_text(json.dumps(rows))
    (qa / "Other.json").write_text(json.dumps([{**rows[0], "question_id": "o1"}]))
    items, stats = read_omnimedvqa(root, subsets=["Chest CT Scan"])
    assert [(it.id, it.kind, it.answer_label, len(it.choices)) for it in items] == [
        ("omnimedvqa:Chest CT Scan:c1", "mcq", "B", 4),
        ("omnimedvqa:Chest CT Scan:c2", "mcq", "B", 2),
    ]
    assert stats.drop_reasons == {"answer_not_one_option": 1} and stats.n_in == 3
    assert items[0].modality == "CT" and items[0].content_type == "Modality Recognition"
    assert load_image(items[0]).getpixel((1, 1)) == (90, 90, 90)
    assert len(read_omnimedvqa(root)[0]) == 3
    with pytest.raises(
        ValueError, match=r"no JSON for subsets \['Brain'\].*present: \['Chest CT Scan', 'Other'\]"
    ):
        read_omnimedvqa(root, subsets=["Brain"])
    with pytest.raises(
        LayoutError, match=r"OmniMedVQA: .*Restricted-access.*QA_information/<access>/\*\.json"
    ):
        read_omnimedvqa(root, access=["Restricted-access"])
    (qa / "Other.json").write_text(json.dumps([{"question_id": "o1", "question": "Q?"}]))
    with pytest.raises(ValueError, match=r"Other\.json: row 0: missing keys \['gt_answer', 'image_path'"):
        read_omnimedvqa(root)


# ---------------------------------------------------------------------------------------------------- MMMU


def mmmu_row(i, question_type="multiple-choice", options="['5 mg', '10 mg', '20 mg']", answer="B", images=1):
    return {
        "id": f"validation_Pharmacy_{i}",
        "question": f"<image 1> Dose {i}?",
        "options": options,
        "explanation": "",
        **{f"image_{k}": image_bytes(100 + i) if k <= images else None for k in range(1, 8)},
        "img_type": "['Tables']",
        "answer": answer,
        "topic_difficulty": "Easy",
        "question_type": question_type,
        "subfield": "Pharmacology",
    }


def test_mmmu_hub_parquet_subjects_kinds_and_drops(tmp_path, cache):
    image_columns = [f"image_{k}" for k in range(1, 8)]
    rows = [
        mmmu_row(1),
        mmmu_row(2, "open", "[]", "12"),
        mmmu_row(3, images=2),
        mmmu_row(4, options=str([f"o{k}" for k in range(7)]), answer="G"),
        mmmu_row(5, answer="D"),
    ]
    hub_parquet(tmp_path / "MMMU" / "Pharmacy" / "validation-00000-of-00001.parquet", rows, image_columns)
    hub_parquet(tmp_path / "MMMU" / "Pharmacy" / "dev-00000-of-00001.parquet", rows[:1], image_columns)
    items, stats = read_mmmu(tmp_path / "MMMU", subjects=["Pharmacy"], image_cache=cache)
    assert [(it.id, it.kind) for it in items] == [
        ("mmmu_med:validation_Pharmacy_1", "mcq"),
        ("mmmu_med:validation_Pharmacy_2", "open"),
    ]
    assert items[0].choices == ["5 mg", "10 mg", "20 mg"] and items[0].answer == "10 mg"
    assert (
        items[1].answer == "12" and items[0].modality == "Tables" and items[0].content_type == "Pharmacology"
    )
    assert stats.drop_reasons == {"multi_image": 1, "too_many_choices": 1, "answer_not_one_option": 1}
    assert load_image(items[1]).getpixel((1, 1)) == (102, 102, 102)
    assert len(read_mmmu(tmp_path / "MMMU", split="dev", subjects=["Pharmacy"], image_cache=cache)[0]) == 1
    with pytest.raises(
        LayoutError,
        match=r"MMMU: .*no Basic_Medical_Science/validation-\*\.parquet, "
        r"Clinical_Medicine/.*subject folders: \['Pharmacy'\]",
    ):
        read_mmmu(tmp_path / "MMMU", image_cache=cache)  # the five medical subjects by default
    with pytest.raises(ValueError, match="test answers are withheld"):
        read_mmmu(tmp_path / "MMMU", split="test")


# --------------------------------------------------------------------------------------- VLMEvalKit's TSV


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_tsv(path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def test_vlmevalkit_tsv_mcq_free_text_references_and_subjects(tmp_path, cache):
    empty = {"A": "", "B": "", "C": ""}
    rows = [
        {
            "index": 0,
            "image": b64(image_bytes(5)),
            "question": "Organ?",
            "answer": "B",
            "A": "liver",
            "B": "spleen",
            "C": "",
            "category": "Organ",
            "answer_type": "",
            "id": "validation_Pharmacy_1",
        },
        {
            "index": 1,
            "image": "0",
            "question": "Abnormal?",
            "answer": "Yes",
            **empty,
            "category": "Abn",
            "answer_type": "CLOSED",
            "id": "validation_Pharmacy_2",
        },  # the image of row 0, by reference
        {
            "index": 2,
            "image": b64(image_bytes(6, "JPEG")),
            "question": "Which side?",
            "answer": "left",
            **empty,
            "category": "Position",
            "answer_type": "closed",
            "id": "validation_History_1",
        },
        {
            "index": 3,
            "image": b64(image_bytes(7)),
            "question": "What?",
            "answer": "a nodule",
            **empty,
            "category": "Abn",
            "answer_type": "",
            "id": "dev_Pharmacy_1",
        },
        {
            "index": 4,
            "image": str([b64(image_bytes(8)), b64(image_bytes(9))]),
            "question": "Two?",
            "answer": "A",
            "A": "x",
            "B": "y",
            "C": "",
            "category": "Abn",
            "answer_type": "",
            "id": "x",
        },
    ]
    write_tsv(tmp_path / "bench.tsv", rows)
    items, stats = read_vlmevalkit_tsv(tmp_path / "bench.tsv", name="b", image_cache=cache)
    assert [(it.id, it.kind, it.answer) for it in items] == [
        ("b:0", "mcq", "spleen"),
        ("b:1", "closed", "Yes"),
        ("b:2", "closed", "left"),
        ("b:3", "open", "a nodule"),
    ]
    assert items[0].image == items[1].image and items[2].image.endswith(".jpg")
    assert stats.drop_reasons == {"multi_image": 1} and items[0].content_type == "Organ"
    assert load_image(items[3]).getpixel((1, 1)) == (7, 7, 7)
    pharmacy, _ = read_vlmevalkit_tsv(tmp_path / "bench.tsv", subjects=["Pharmacy"], image_cache=cache)
    assert [it.question for it in pharmacy] == ["Organ?", "Abnormal?", "What?"]
    # The benchmark readers take a TSV too.
    assert len(read_mmmu(tmp_path / "bench.tsv", subjects=["Pharmacy"], image_cache=cache)[0]) == 3

    write_tsv(tmp_path / "bad.tsv", [{**rows[3], "image": "not base64 !!"}])
    with pytest.raises(ValueError, match=r"bad\.tsv: row 0: "):
        read_vlmevalkit_tsv(tmp_path / "bad.tsv", image_cache=cache)
    write_tsv(tmp_path / "noimg.tsv", [{k: v for k, v in rows[3].items() if k != "image"}])
    with pytest.raises(
        ValueError, match=r"noimg\.tsv: missing columns \['image'\].*VLMEvalKit's TSV: columns"
    ):
        read_vlmevalkit_tsv(tmp_path / "noimg.tsv", image_cache=cache)


def test_store_image_bytes_refuses_non_images(tmp_path):
    with pytest.raises(ValueError, match="row 7: the embedded image cannot be decoded"):
        store_image_bytes(b"not an image", tmp_path, "row 7")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- csv: a mapped answer-type column


def test_csv_answer_type_column_mapping(tmp_path, compose, capsys):
    rows = [
        {"img": "a.png", "q": "Is it normal?", "a": "no", "t": "CLOSED"},
        {"img": "a.png", "q": "Which side?", "a": "left", "t": "closed"},
        {"img": "a.png", "q": "Is it yes?", "a": "yes", "t": "OPEN"},
        {"img": "a.png", "q": "Is it benign?", "a": "yes", "t": ""},
        {"img": "a.png", "q": "What?", "a": "a mass", "t": ""},
    ]
    path = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    cols = {"image": "img", "question": "q", "answer": "a", "answer_type": "t"}
    items, _ = read_csv_dataset(path, cols)
    assert [it.kind for it in items] == ["closed", "closed", "open", "closed", "open"]
    unmapped, _ = read_csv_dataset(path, {k: v for k, v in cols.items() if k != "answer_type"})
    assert [it.kind for it in unmapped] == ["closed", "open", "closed", "closed", "open"]
    # The user: the answer type sits in a column named content_type, mapped through the entry's
    # config.
    pd.DataFrame(rows).rename(columns={"t": "content_type"}).to_csv(path, index=False)
    cfg = compose(
        "generate",
        [
            "dataset=csv",
            f"dataset.path={path}",
            "dataset.columns.image=img",
            "dataset.columns.question=q",
            "dataset.columns.answer=a",
            "dataset.columns.answer_type=content_type",
        ],
    )
    items, _ = load_dataset(cfg.dataset)
    assert [it.kind for it in items] == ["closed", "closed", "open", "closed", "open"]
    assert "load csv: 5 items — mcq 0, closed 3, open 2\n" in capsys.readouterr().out
    pd.DataFrame([{**rows[0], "t": "YESNO"}]).to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=r"mine\.csv: row 0: column 't': answer type 'YESNO', expected CLOSED"
    ):
        read_csv_dataset(path, cols)
    with pytest.raises(ValueError, match=r"missing columns \['kind'\]"):
        read_csv_dataset(path, {**cols, "answer_type": "kind"})


# ---------------------------------------------------------------- entries: compose, the per-kind console line


def test_compose_benchmark_entries_print_the_kind_line(compose, tmp_path, capsys):
    hub_parquet(tmp_path / "rad" / "data" / "test-00000-of-00001.parquet", FREE_TEXT_ROWS)
    cfg = compose("evaluate", ["dataset=vqa_rad", f"dataset.path={tmp_path / 'rad'}"])
    assert cfg.dataset.image_cache == f"{cfg.paths.cache}/benchmark-images"
    items, stats = load_dataset(cfg.dataset)
    assert len(items) == 3 and stats.metrics["kinds"] == {"mcq": 0, "closed": 2, "open": 1}
    assert "load vqa_rad[test]: 3 items — mcq 0, closed 2, open 1\n" in capsys.readouterr().out

    rows = [mmmu_row(1), mmmu_row(3, images=2)]
    hub_parquet(
        tmp_path / "mm" / "Pharmacy" / "validation-00000-of-00001.parquet",
        rows,
        [f"image_{k}" for k in range(1, 8)],
    )
    cfg = compose(
        "evaluate",
        [
            "dataset=mmmu_med",
            f"dataset.path={tmp_path / 'mm'}",
            "dataset.subjects=[Pharmacy]",
            f"dataset.image_cache={tmp_path / 'c'}",
        ],
    )
    load_dataset(cfg.dataset)
    assert "load mmmu_med[validation]: 1 items — mcq 1, closed 0, open 0; dropped 1 of 2: multi_image 1" in (
        capsys.readouterr().out
    )
    readers = {
        "path_vqa": "read_path_vqa",
        "pmc_vqa_test": "read_pmc_vqa_test",
        "omnimedvqa": "read_omnimedvqa",
        "vlmevalkit_tsv": "read_vlmevalkit_tsv",
    }
    for entry, reader in readers.items():
        target = compose("evaluate", [f"dataset={entry}", "dataset.path=/x"]).dataset._target_
        assert target == f"mvqa.data.benchmarks.{reader}"


# ------------------------------------------------------------------------------------------- real SLAKE


def test_real_slake_official_splits_keep_kinds(compose, shared_data, capsys):
    cfg = compose("evaluate", ["dataset=slake"])
    assert not cfg.dataset.open_to_mcq
    sizes = {}
    for split in ("train", "validate", "test"):
        items, _ = load_dataset(cfg.dataset, split=split)
        sizes[split] = len(items)
        assert all(it.kind == {"CLOSED": "closed", "OPEN": "open"}[it.extra["answer_type"]] for it in items)
        assert not any(it.choices for it in items)
    assert sizes == {"train": 4919, "validate": 1053, "test": 1061}
    out = capsys.readouterr().out
    assert "load slake[test]: 1061 items — mcq 0, closed 416, open 645\n" in out
    assert "load slake[validate]: 1053 items — mcq 0, closed 422, open 631\n" in out

    cfg = compose("evaluate", ["dataset=slake", "dataset.open_to_mcq=true"])
    items, _ = load_dataset(cfg.dataset)
    assert kind_counts(items) == {"mcq": 1060, "closed": 1, "open": 0}
    assert (
        "load slake[test]: 1061 items — mcq 1060, closed 1, open 0; converted closed_parsed_options->mcq 60, "
        "closed_yes_no->mcq 355, open->mcq 645"
    ) in capsys.readouterr().out

"""The synthetic world: determinism, atomic caching, balance, images, traces, learnability, config."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvqa.data import synthetic
from mvqa.data.grading import grade_output
from mvqa.data.loading import load_dataset
from mvqa.data.prompts import parse_item_answer
from mvqa.data.synthetic import (
    PERCEPTION_TYPES,
    QUESTION_TYPES,
    TEXTBOOK_TYPES,
    WorldParams,
    make_world,
    read_synthetic,
    synthetic_corpus,
)

TINY = {"n_train": 48, "n_val": 12, "n_test": 24, "image_size": 64}
# The default mix weighs perception types 1 and textbook types 2: of 48 items, 4 per perception type, 8 per
# textbook type.
PER_TYPE = {**dict.fromkeys(PERCEPTION_TYPES, 4), **dict.fromkeys(TEXTBOOK_TYPES, 8)}


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pixels(item, size: int | None = None) -> np.ndarray:
    img = Image.open(Path(item.image_root) / item.image)
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def test_same_seed_is_byte_identical_and_other_seeds_differ(tmp_path):
    a = tree_hashes(make_world(tmp_path / "a", WorldParams(**TINY, seed=3)))
    b = tree_hashes(make_world(tmp_path / "b", WorldParams(**TINY, seed=3)))
    c = tree_hashes(make_world(tmp_path / "c", WorldParams(**TINY, seed=4)))
    assert len(a) == 48 + 12 + 24 + 4  # images, three CSVs, world.json
    assert a == b
    differing = {k for k in a if k != "world.json" and a[k] != c.get(k)}
    assert {"train.csv", "val.csv", "test.csv"} <= differing
    assert sum(k.endswith(".png") for k in differing) > 0.9 * (48 + 12 + 24)


def test_world_is_cached_and_a_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    params = WorldParams(**TINY)
    real_render, calls = synthetic.render, []

    def render_then_die(*args):
        calls.append(1)
        if len(calls) > 30:
            raise KeyboardInterrupt  # a kill half-way through the train split
        return real_render(*args)

    monkeypatch.setattr(synthetic, "render", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        make_world(tmp_path, params)
    assert list(tmp_path.iterdir()) == []  # no world, no temporary directory

    monkeypatch.setattr(synthetic, "render", real_render)
    world = make_world(tmp_path, params)
    assert world == synthetic.world_dir(tmp_path, params) and (world / "world.json").is_file()
    stamp = (world / "train.csv").stat().st_mtime_ns
    monkeypatch.setattr(synthetic, "render", render_then_die)  # a cached world renders nothing
    assert make_world(tmp_path, params) == world
    assert (world / "train.csv").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [world.name]


def test_split_is_balanced_complete_and_traces_give_the_label(tmp_path):
    items, stats = read_synthetic(str(tmp_path), **TINY, split="train")
    assert len(items) == 48 and stats.n_out == 48 and not stats.dropped
    world_stats = stats.metrics["synthetic_split"]  # what world.json records, for the demo to print
    assert world_stats["items"] == 48 and world_stats["Answer_label"] == dict.fromkeys("ABCD", 6)
    # Per type of 4: round(0.2 * 4) = 1 closed, 1 open, 2 multiple choice; of 8: 2, 2, 4; yes and no as often.
    assert world_stats["kind"] == {"closed": 12, "mcq": 24, "open": 12}
    assert world_stats["closed_answer"] == {"no": 6, "yes": 6}
    assert collections.Counter(it.kind for it in items) == {"mcq": 24, "closed": 12, "open": 12}
    assert collections.Counter(it.answer_label for it in items if it.is_mcq) == dict.fromkeys("ABCD", 6)
    assert collections.Counter(it.content_type for it in items) == PER_TYPE
    # The textbook ties an abscess to MRI and a cyst to CT or X-ray; perception items' modalities are even.
    perception = [it for it in items if it.content_type in PERCEPTION_TYPES]
    assert collections.Counter(it.modality for it in perception) == dict.fromkeys(["CT", "MRI", "X-ray"], 8)
    combos = collections.Counter((it.modality, it.answer) for it in items if it.content_type == "stage")
    assert len(combos) >= 6  # modality and answer value vary independently, not in lockstep
    for qtype in QUESTION_TYPES:  # every answer value about equally often, so the text cannot tell
        counts = collections.Counter(it.answer for it in items if it.content_type == qtype)
        assert max(counts.values()) - min(counts.values()) <= 1, (qtype, counts)
    assert len({it.id for it in items}) == 48
    for it in items:
        assert it.split == "train" and it.source == "synthetic"
        img = Image.open(Path(it.image_root) / it.image)
        assert img.mode == "RGB" and img.size == (64, 64)
        assert grade_output(it, it.extra["trace"]).correct  # every template trace answers right, each its way
        parsed = parse_item_answer(it, it.extra["trace"])
        if it.kind == "closed":
            assert it.choices == [] and it.answer in ("yes", "no") and parsed.answer_text == it.answer
            assert it.question.endswith("?") and "{value}" not in it.question
            continue
        if it.kind == "open":
            assert it.choices == [] and parsed.answer_text == it.answer and "option" not in it.question
            continue
        assert len(it.choices) == 4
        assert len(set(it.choices)) == 4 and it.choices[it.answer_index] == it.answer
        assert not it.choices[0].startswith("A:")  # the reader stripped PMC-VQA's " A: " prefixes
        assert parsed.status == "ok" and parsed.letter == it.answer_label
        assert parsed.thinking.count(".") >= 3  # several sentences of evidence
        assert isinstance(it.extra["difficulty"], float)
    lengths = [len(it.extra["trace"]) for it in items]
    assert max(lengths) > 1.5 * min(lengths)
    other, _ = read_synthetic(str(tmp_path), **TINY, split="test")
    assert len(other) == 24 and not {it.id for it in other} & {it.id for it in items}


def test_describe_items_caption_every_train_image(tmp_path):
    """describe=True: one open item per image whose answer lists the modality and every lesion; the direct
    formatter teaches it as plain text and still formats the multiple-choice items."""
    from mvqa.models.bundle import SpecialTokens
    from mvqa.train.trace_format import TraceFormatter

    items, _ = read_synthetic(str(tmp_path), **TINY, split="train")
    both, stats = read_synthetic(str(tmp_path), **TINY, split="train", describe=True)
    described = [it for it in both if it.content_type == "describe"]
    assert both[:48] == items and len(described) == 48 and stats.metrics["describe_items"] == 48
    for mcq, it in zip(items, described):
        assert (it.id, it.image, it.question) == (f"{mcq.id}-describe", mcq.image,
                                                  synthetic.DESCRIBE_QUESTION)
        assert it.answer == mcq.extra["caption"] and it.answer.startswith(f"{mcq.modality}. ")
        assert it.content_type == "describe" and it.answer_label is None
    counts = [it for it in described if it.answer.endswith("No lesion.")]
    assert 0 < len(counts) < 48 and any(it.answer.count(",") == 2 for it in described)  # 0 and 3 lesions
    formatted, fstats = TraceFormatter(style="direct", answer_format="text")(both, SpecialTokens())
    assert len(formatted) == 96 and not fstats.dropped
    assert formatted[48].extra["target"]["closing"] == f"<answer>{described[0].answer}</answer>"
    _, rejected = TraceFormatter(style="med_r1")(described[:2], SpecialTokens())
    assert rejected.drop_reasons == {"no_trace": 2}  # no trace to think with: rejected, and counted
    val, _ = read_synthetic(str(tmp_path), **TINY, split="val", describe=True)
    assert val and not any(it.content_type == "describe" for it in val)  # describe items are for training


def test_combined_question_options_do_not_give_the_answer_away(tmp_path):
    items, _ = read_synthetic(str(tmp_path), **TINY, split="train")
    combined = [it for it in items if it.content_type == "modality_location" and it.is_mcq]
    assert combined
    for it in combined:  # a 2x2 grid: each modality and each quadrant named by exactly two options
        modalities = collections.Counter(c.split(" with ")[0] for c in it.choices)
        quadrants = collections.Counter(c.split(" in the ")[1] for c in it.choices)
        assert sorted(modalities.values()) == [2, 2] and sorted(quadrants.values()) == [2, 2]
        assert it.modality == it.answer.split(" with ")[0]


def textbook_answer(it) -> str:
    """The answer the textbook gives, derived here from the item's caption (its findings) by the rules as the
    README states them, independently of how the world planned the item."""
    modality, _, spots = it.extra["caption"].partition(". Lesions: ")
    # e.g. ["upper", "left", "small", "dark"]
    lesions = [spot.split() for spot in spots.rstrip(".").split(", ")]
    sizes = ["tiny", "small", "medium", "large"]
    if it.content_type == "diagnosis":
        (lesion,) = lesions
        if lesion[-1] == "dark":
            return "abscess" if modality == "MRI" else "cyst"
        return "tumor" if lesion[0] == "upper" else "hematoma"
    if it.content_type == "stage":
        stage = len(lesions) + any(lesion[2] == "large" for lesion in lesions)
        return "stage " + ["I", "II", "III", "IV"][stage - 1]
    largest = max(lesions, key=lambda lesion: sizes.index(lesion[2]))
    return " ".join(largest[:2])


def test_textbook_answers_follow_the_rules_and_closed_ones_are_negated_half_the_time(tmp_path):
    items, _ = read_synthetic(str(tmp_path), **{**TINY, "n_train": 240}, split="train")
    textbook = [it for it in items if it.content_type in TEXTBOOK_TYPES]
    assert len(textbook) == 120
    negated = 0
    for it in textbook:
        truth = textbook_answer(it)
        assert "Rule: " in it.extra["trace"] and grade_output(it, it.extra["trace"]).correct
        if it.kind == "closed":  # the value asked about, found in the question's wording
            values = synthetic.DIAGNOSES + synthetic.STAGES + synthetic.QUADRANTS
            asked = max((v for v in values if f" {v}" in it.question), key=len)
            flipped = " not " in it.question or "other than" in it.question or "but" in it.question \
                or "outside" in it.question
            negated += flipped
            assert it.answer == ("yes" if (asked == truth) != flipped else "no"), it.question
        else:
            assert it.answer == truth, (it.question, it.extra["caption"])
    closed = [it for it in textbook if it.kind == "closed"]
    assert negated == len(closed) // 2
    assert collections.Counter(it.answer for it in closed) == {"yes": 12, "no": 12}
    diagnoses = collections.Counter(textbook_answer(it) for it in textbook if it.content_type == "diagnosis")
    assert diagnoses == dict.fromkeys(synthetic.DIAGNOSES, 10)  # every diagnosis as often
    assert not any("Rule: " in it.extra["trace"] for it in items if it.content_type in PERCEPTION_TYPES)


def test_dark_lesions_are_drawn_below_their_background_and_bright_ones_above(tmp_path):
    items, _ = read_synthetic(str(tmp_path), **{**TINY, "n_train": 240}, split="train")
    checked = collections.Counter()
    for it in items:
        if it.content_type != "diagnosis" or it.extra["difficulty"] >= 0.6:
            continue
        img = pixels(it)
        (spot,) = [it.extra["caption"].partition(". Lesions: ")[2].rstrip(".").split()]
        y, x = (18 if spot[0] == "upper" else 46), (18 if spot[1] == "left" else 46)
        centre, background = img[y - 1:y + 2, x - 1:x + 2].mean(), np.median(img[16:48, 16:48])
        dark = spot[-1] == "dark"
        drawn = (centre < background - 0.15) if dark else (centre > background + 0.3)
        assert drawn, (it.id, centre, background)
        checked[dark] += 1
    assert checked[True] >= 8 and checked[False] >= 8


def test_question_mix_chooses_the_types_and_names_bad_ones(tmp_path):
    only_stage, _ = read_synthetic(str(tmp_path), **TINY, question_mix={"stage": 1.0}, split="val")
    assert {it.content_type for it in only_stage} == {"stage"} and len(only_stage) == 12
    mixed, _ = read_synthetic(str(tmp_path), **TINY, question_mix={"count": 3, "largest": 1, "size": 0},
                              split="test")
    assert collections.Counter(it.content_type for it in mixed) == {"count": 18, "largest": 6}
    # zero weights and key order do not make another world
    assert WorldParams(question_mix={"largest": 1, "count": 3, "size": 0}).key() == \
        WorldParams(question_mix={"count": 3.0, "largest": 1.0}).key() != WorldParams().key()
    with pytest.raises(ValueError, match=r"unknown question types \['stagee'\]"):
        WorldParams(question_mix={"stagee": 1.0})
    with pytest.raises(ValueError, match="question_mix weights"):
        WorldParams(question_mix={"stage": -1.0, "count": 2.0})


def test_hard_items_are_noisier(tmp_path):
    items, _ = read_synthetic(str(tmp_path), **TINY, hard_fraction=0.5, split="train")
    hard = [it for it in items if it.extra["difficulty"] >= 0.6]
    easy = [it for it in items if it.extra["difficulty"] == 0.1]
    assert len(hard) == len(easy) == 24  # exactly the share asked for, half of each question type
    assert collections.Counter(it.content_type for it in hard) == {t: n // 2 for t, n in PER_TYPE.items()}

    def roughness(it):  # mean absolute difference between horizontal neighbours
        return float(np.abs(np.diff(pixels(it), axis=1)).mean())

    assert min(map(roughness, hard)) > max(map(roughness, easy))


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        WorldParams(image_size=8)
    with pytest.raises(ValueError, match="hard_fraction"):
        WorldParams(hard_fraction=1.5)
    with pytest.raises(ValueError, match="split"):
        read_synthetic(str(tmp_path), **TINY, split="dev")


def probe_accuracy(train, test) -> dict[str, float]:
    """Per question type: a logistic probe on 32x32 grey pixels predicts the answer text; pick its option."""
    from sklearn.linear_model import LogisticRegression

    x_train = np.stack([pixels(it, 32).ravel() for it in train])
    x_test = np.stack([pixels(it, 32).ravel() for it in test])
    accuracy = {}
    for qtype in QUESTION_TYPES:
        tr = [i for i, it in enumerate(train) if it.content_type == qtype]
        te = [i for i, it in enumerate(test) if it.content_type == qtype]
        probe = LogisticRegression(max_iter=500).fit(x_train[tr], [train[i].answer for i in tr])
        classes, hits = list(probe.classes_), 0
        for i, proba in zip(te, probe.predict_proba(x_test[te])):
            scores = [proba[classes.index(c)] if c in classes else -1.0 for c in test[i].choices]
            hits += test[i].letters[int(np.argmax(scores))] == test[i].answer_label
        accuracy[qtype] = hits / len(te)
    return accuracy


def text_only_accuracy(train, test) -> float:
    """A classifier that sees only the question and the lettered options, never the image."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def text(it):
        return it.question + " " + " ".join(f"{L}_{c.replace(' ', '_')}" for L, c in it.choice_map().items())

    vec = TfidfVectorizer(token_pattern=r"\S+").fit([text(it) for it in train])
    blind = LogisticRegression(max_iter=1000).fit(vec.transform([text(it) for it in train]),
                                                  [it.answer_label for it in train])
    return float(
        np.mean(blind.predict(vec.transform([text(it) for it in test])) == [it.answer_label for it in test]))


@pytest.mark.slow
def test_learnable_from_32px_pixels_but_not_from_text(tmp_path):
    from threadpoolctl import threadpool_limits

    # The probe picks one of four options: a world of multiple-choice items only (the kinds share its images).
    kw = {"n_train": 600, "n_val": 0, "n_test": 240, "image_size": 64, "closed_share": 0.0, "open_share": 0.0}
    train, _ = read_synthetic(str(tmp_path), **kw, split="train")
    test, _ = read_synthetic(str(tmp_path), **kw, split="test")
    # BLAS threads on a busy 2-core machine made these small fits 10x slower
    with threadpool_limits(limits=1):
        per_type = probe_accuracy(train, test)
        blind = text_only_accuracy(train, test)
    overall = sum(per_type[it.content_type] for it in test) / len(test)
    assert overall >= 0.8 and min(per_type.values()) >= 0.5, per_type
    assert blind < 0.4


def test_corpus_is_the_worlds_text_without_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = synthetic_corpus(seed=0, n_items=24)
    assert list(tmp_path.iterdir()) == []
    assert corpus == synthetic_corpus(seed=0, n_items=24) != synthetic_corpus(seed=1, n_items=24)
    items, _ = read_synthetic(str(tmp_path / "w"), n_train=24, n_val=0, n_test=0, split="train")
    for it in items:
        assert it.question in corpus and it.extra["trace"] in corpus and set(it.choices) <= set(corpus)
    # The prompt wording and conversation markup are included, filled in (no template syntax left).
    assert any("Eliminate incorrect options one by one" in t for t in corpus)
    # the textbook, as traces cite it
    assert any("Rule: a dark lesion on MRI is an abscess." in t for t in corpus)
    assert any(t.startswith("[INST] <image>\n") and t.endswith(" </s>") for t in corpus)
    assert not any("[[" in t or "{question}" in t for t in corpus)


def test_generate_config_composes_and_instantiates(compose, tmp_path):
    cfg = compose("generate",
                  ["dataset.n_train=12", "dataset.n_val=6", "dataset.n_test=6", "dataset.split=val",
                               f"paths.cache={tmp_path / 'cache'}", "seed=5"])
    assert cfg.dataset.name == "synthetic" and cfg.dataset.seed == 5
    assert cfg.dataset.root == str(tmp_path / "cache" / "synthetic")
    items, stats = load_dataset(cfg.dataset)
    assert len(items) == 6 and {it.split for it in items} == {"val"} and stats.stage == "load"
    assert Path(items[0].image_root).is_relative_to(tmp_path / "cache" / "synthetic")


def test_misspelt_synthetic_key_fails_at_compose(compose):
    with pytest.raises(Exception, match="n_trian"):
        compose("generate", ["dataset.n_trian=5"])

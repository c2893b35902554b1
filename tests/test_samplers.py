"""Samplers and the diversity report: exact n, determinism, k > N, quotas, the seed sampler reproduced, and
coverage / spread / outliers checked against hand-computed examples."""

from __future__ import annotations

import collections
import functools
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.sparse import hstack
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from mvqa.curate.diversity import (
    coverage,
    diversity_report,
    mean_pairwise_cosine_distance,
    outlier_figures,
    seed_space,
    write_diversity_report,
)
from mvqa.curate.sample import (
    CoverSpreadSampler,
    EmbedKMeansSampler,
    KCenterSVDSampler,
    KMeansSeedSampler,
    MiniBatchKMeansSampler,
    RandomSampler,
    RowSimilarity,
    SVDKMeansSampler,
    allocate_quotas,
    cluster_balance,
    farthest_point_order,
    kmeanspp_clusters,
    sample,
    sample_stage,
)
from mvqa.data.readers import read_pmc_vqa
from mvqa.data.records import VQAItem

ORGANS = ["liver", "lung", "kidney", "heart", "brain", "spleen"]
FINDINGS = ["lesion", "fracture", "mass", "effusion", "nodule"]
MODALITIES = ["CT"] * 30 + ["MRI"] * 20 + ["X-ray"] * 10
FAST = [CoverSpreadSampler, KCenterSVDSampler, KMeansSeedSampler, MiniBatchKMeansSampler, SVDKMeansSampler,
        RandomSampler]


def synthetic_items(n: int = 60) -> list[VQAItem]:
    return [VQAItem(id=f"s{i:03d}", image=f"PMC{100 + i // 2}_F1.jpg",
                    question=f"Which {FINDINGS[i % 5]} is seen in the {ORGANS[i % 6]} on view {i // 30}?",
                    choices=["yes", "no", "maybe", "unclear"], answer_label="ABCD"[i % 4], answer="yes",
                    modality=MODALITIES[i % len(MODALITIES)]) for i in range(n)]


@pytest.mark.parametrize("cls", FAST)
def test_exact_n_distinct_deterministic(cls):
    items = synthetic_items()
    out, stats = cls(n=12, seed=3)(items)
    again, _ = cls(n=12, seed=3)(items)
    ids = [it.id for it in out]
    assert len(ids) == 12 == len(set(ids)) and ids == [it.id for it in again]
    assert (stats.n_in, stats.n_out, stats.drop_reasons) == (60, 12, {"not_sampled": 48})
    assert stats.warnings == [] and stats.metrics["sampler"] == cls.name


def test_seed_changes_the_random_rows():
    items = synthetic_items()
    picks = {tuple(it.id for it in RandomSampler(n=12, seed=s)(items)[0]) for s in range(3)}
    assert len(picks) == 3


@pytest.mark.parametrize("cls", FAST)
def test_more_than_available_takes_all_with_a_warning(cls):
    items = synthetic_items(7)
    out, stats = cls(n=10)(items)
    assert out == items and stats.dropped == []
    assert "n=10 > 7 items" in stats.warnings[0]
    assert cls(n=7)(items)[1].warnings == []


def test_allocate_quotas():
    sizes = {("CT",): 30, ("MRI",): 20, ("X-ray",): 10}
    assert allocate_quotas(sizes, 12) == {("CT",): 6, ("MRI",): 4, ("X-ray",): 2}
    # 3.5/2.33/1.17: CT's .5 wins
    assert allocate_quotas(sizes, 7) == {("CT",): 4, ("MRI",): 2, ("X-ray",): 1}
    assert allocate_quotas({"a": 30, "b": 20, "c": 2}, 12, "equal") == {"a": 5, "b": 5, "c": 2}
    assert allocate_quotas({"a": 3, "b": 1}, 10) == {"a": 3, "b": 1}
    assert sum(allocate_quotas({"a": 5, "b": 5, "c": 5}, 10, "equal").values()) == 10


@pytest.mark.parametrize("cls", [CoverSpreadSampler, KCenterSVDSampler, KMeansSeedSampler, RandomSampler])
def test_stratified_quotas_are_respected(cls):
    items = synthetic_items()
    out, stats = cls(n=12, stratify=["modality"])(items)
    assert collections.Counter(it.modality for it in out) == {"CT": 6, "MRI": 4, "X-ray": 2}
    assert stats.metrics["quotas"] == {"CT": 6, "MRI": 4, "X-ray": 2}
    out, _ = cls(n=12, stratify=["modality", "answer_label"], quota="equal")(items)
    counts = collections.Counter((it.modality, it.answer_label) for it in out)
    assert len(counts) == 12 and set(counts.values()) == {1}  # 3 modalities x 4 labels, one each


def test_bad_sampler_settings():
    with pytest.raises(ValueError, match="unknown field.*'organ'"):
        KCenterSVDSampler(stratify=["organ"])
    with pytest.raises(ValueError, match="all 0"):
        KCenterSVDSampler(n=2, question_weight=0, image_weight=0)(synthetic_items(5))
    with pytest.raises(ValueError, match="pick"):
        SVDKMeansSampler(pick="median")
    with pytest.raises(ValueError, match="init"):
        SVDKMeansSampler(init="kmeans")
    with pytest.raises(ValueError, match="trials"):
        CoverSpreadSampler(trials=0)
    with pytest.raises(ValueError, match="spread_weight"):
        CoverSpreadSampler(spread_weight=-1)
    with pytest.raises(ValueError, match="seeding_spread_weight"):
        CoverSpreadSampler(seeding_spread_weight=-0.1)


def seed_script(df: pd.DataFrame, n_samples: int) -> pd.DataFrame:
    """The seed's analyze_trace.py sampling steps, re-implemented on a DataFrame of its rows."""
    question_vecs = TfidfVectorizer(max_features=512).fit_transform(df["question"].astype(str))
    image_vecs = TfidfVectorizer().fit_transform(df["figure_path"].astype(str)).multiply(0.25)
    X = normalize(hstack([question_vecs, image_vecs]))
    k = min(n_samples, len(df))
    df = df.assign(cluster=KMeans(n_clusters=k, random_state=42, n_init="auto").fit_predict(X))
    rows = [df[df.cluster == c].sample(n=1, random_state=42) for c in range(k) if (df.cluster == c).any()]
    return pd.concat(rows).drop(columns=["cluster"])


def test_kmeans_seed_picks_the_seeds_rows(shared_data):
    path = shared_data / "mvqa1k" / "sampled_final.csv"
    frame = pd.read_csv(path).head(300)
    expected = seed_script(frame, 40)
    items, _ = read_pmc_vqa(path, limit=300)
    out, _ = KMeansSeedSampler(n=40)(items)
    assert [(it.image, it.question) for it in out] == \
        list(zip(expected.figure_path, expected.question.str.strip()))


def test_farthest_point_covers_every_cluster_first():
    rng = np.random.default_rng(0)
    centres = normalize(rng.normal(size=(5, 16)))
    Z = normalize(np.repeat(centres, 20, axis=0) + 0.01 * rng.normal(size=(100, 16))).astype(np.float32)
    picks = farthest_point_order(Z, 5, seed=1)
    assert sorted(picks // 20) == [0, 1, 2, 3, 4]
    assert len(set(farthest_point_order(Z, 100, seed=1))) == 100  # never repeats, even past the clusters


@pytest.mark.parametrize("pick", ["random", "centroid"])
@pytest.mark.parametrize("cls", [SVDKMeansSampler, MiniBatchKMeansSampler,
                                 functools.partial(SVDKMeansSampler, init="k-means++")])
def test_cluster_samplers_take_one_row_per_topic(cls, pick):
    items = topic_items()
    out, _ = cls(n=4, pick=pick, image_weight=0)(items)
    assert sorted(it.id[1] for it in out) == ["0", "1", "2", "3"]


def test_sample_from_config(compose):
    cfg = compose("generate", ["sampler=kmeans_seed", "sampler.n=10", "sampler.stratify=[modality]"])
    items = synthetic_items()
    out, stats = sample(items, cfg.sampler)
    assert len(out) == 10 and stats.metrics["sampler"] == "kmeans_seed"
    assert cfg.sampler.seed == cfg.seed  # the config's sampler follows the top-level seed
    assert [it.id for it in out] == [it.id for it in KMeansSeedSampler(n=10, stratify=["modality"],
                                                                       seed=cfg.seed)(items)[0]]


def test_coverage_hand_computed():
    # Unit rows a=(1,0,0), b=(0,1,0), c=(0.6,0.8,0); picking a: distances 0, 1 and 1 - 0.6 -> mean 1.4 / 3.
    X = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32))
    assert coverage(X, [0]) == pytest.approx(1.4 / 3)
    # Picking c as well: b is now 1 - 0.8 from c -> (0 + 0.2 + 0) / 3.
    assert coverage(X, [0, 2]) == pytest.approx(0.2 / 3)
    assert coverage(X, [0, 1, 2]) == pytest.approx(0.0)
    # Spread of {a, c}: one pair at distance 0.4.
    assert mean_pairwise_cosine_distance(X[[0, 2]]) == pytest.approx(0.4)


def test_outliers_hand_made():
    # 10 copies of e1, 9 of e2, one e3: nearest-neighbour distances 0 (x19) and 1; the 95th percentile is
    # 0.05 (linear interpolation), so e3 alone is an outlier, in the pool and among picks {e1, e2, e3}.
    rows = [[1, 0, 0]] * 10 + [[0, 1, 0]] * 9 + [[0, 0, 1]]
    X = sp.csr_matrix(np.array(rows, dtype=np.float32))
    pool, picks = outlier_figures(X, np.array([0, 10, 19]))
    assert pool["outliers"] == 1 and pool["outlier_threshold"] == pytest.approx(0.05)
    assert picks == {"outliers": 1}
    assert outlier_figures(X, np.array([0, 1, 10]))[1] == {"outliers": 0}


def test_cluster_balance():
    # sizes 1, 3, 2: mean 2, population std sqrt(2/3) -> cv 0.4082
    assert cluster_balance([1, 3, 2]) == {"count": 3, "min": 1, "median": 2.0, "max": 3, "singletons": 1,
                                          "cv": 0.4082}


def topic_items(odd: int = 0) -> list[VQAItem]:
    topics = ["renal cyst size", "femur fracture line", "cardiac chamber wall", "pulmonary nodule margin"]
    # The topics share "on the scan", so they sit closer to each other than to the odd rows (no shared word).
    items = [VQAItem(id=f"t{t}{i}", image=f"img{t}.jpg", question=f"{topics[t]} on the scan {'?' * (i + 1)}",
                     choices=[], answer_label=None, answer="") for t in range(4) for i in range(6)]
    oddities = ["zebra xylophone quartz", "violin glacier marmalade", "tornado saxophone ember"]
    return items + [
        VQAItem(id=f"odd{j}", image=f"odd{j}.jpg", question=oddities[j], choices=[], answer_label=None,
                answer="") for j in range(odd)]


def test_cover_spread_skips_outliers_that_kcenter_takes():
    items = topic_items(odd=2)
    out, stats = CoverSpreadSampler(n=4, image_weight=0)(items)
    assert sorted(it.id[:2] for it in out) == ["t0", "t1", "t2", "t3"]
    assert stats.metrics["clusters"]["count"] == 4
    kcenter, _ = KCenterSVDSampler(n=4, image_weight=0)(items)
    assert any(it.id.startswith("odd") for it in kcenter)
    report, kreport = diversity_report(items, out), diversity_report(items, kcenter)
    assert report["output"]["coverage"] < kreport["output"]["coverage"]
    assert report["output"]["outliers"] == 0 < kreport["output"]["outliers"]


def test_kmeanspp_seeds_distinct_and_seeded():
    X = seed_space(synthetic_items())
    seeds = kmeanspp_clusters(X, 20, seed=1)[0]
    assert len(set(seeds.tolist())) == 20
    assert seeds.tolist() == kmeanspp_clusters(X, 20, seed=1)[0].tolist()
    # all rows equal: still 3 distinct rows
    dup = sp.csr_matrix(np.ones((5, 2), dtype=np.float32) / np.sqrt(2))
    assert sorted(kmeanspp_clusters(dup, 3, seed=0)[0].tolist()) == sorted(
        set(kmeanspp_clusters(dup, 3, seed=0)[0].tolist()))


def test_kmeanspp_spread_weight_trades_redundancy_for_spread():
    # The trial choice adds w * 2/(k(k-1)) * (similarity to the seeds so far): with w > 0 the seeds spread
    # at least as wide as with w = 0 at every seed (wider in total), and cover the rows as well.
    X = seed_space(synthetic_items(120))
    figures = {w: [(mean_pairwise_cosine_distance(X[s]), coverage(X, s))
                   for s in (kmeanspp_clusters(X, 12, seed=seed, spread_weight=w)[0] for seed in range(5))]
               for w in (0.0, 1.0)}
    for (spread0, cover0), (spread1, cover1) in zip(figures[0.0], figures[1.0], strict=True):
        assert spread1 >= spread0 and cover1 <= cover0 + 1e-6
    assert sum(s for s, _ in figures[1.0]) > sum(s for s, _ in figures[0.0]) + 0.02


def test_row_similarity_matches_the_sparse_product():
    rng = np.random.default_rng(0)
    # 300 rows: features 0-2 in nearly every row (dense block), 3-199 rare; some rows share two rare features.
    dense = sp.random(300, 200, density=0.03, random_state=1, dtype=np.float32).tolil()
    dense[:, :3] = rng.random((300, 3)).astype(np.float32)
    X = normalize(dense.tocsr())
    rows = np.array([5, 17, 17, 250, 299])
    similarity = RowSimilarity(X)
    assert similarity.dense.shape[0] == 3
    np.testing.assert_allclose(similarity(rows), (X[rows] @ X.T).toarray(), atol=1e-6)
    probe = np.sort(rng.choice(300, 40, replace=False))
    np.testing.assert_allclose(RowSimilarity(X, probe)(rows), (X[rows] @ X[probe].T).toarray(), atol=1e-6)


@pytest.mark.parametrize("probe_rows", [16384, 20])  # every row compared, or a 20-row probe of the 60
def test_kmeanspp_clusters_label_every_row_with_its_nearest_seed(probe_rows):
    X = seed_space(synthetic_items())
    seeds, labels = kmeanspp_clusters(X, 10, seed=3, probe_rows=probe_rows)
    sims = (X @ X[seeds].T).toarray()
    np.testing.assert_allclose(sims[np.arange(X.shape[0]), labels], sims.max(axis=1), atol=1e-6)
    assert labels[seeds].tolist() == list(range(10))


def test_diversity_report(tmp_path):
    items = synthetic_items()
    out = items[::6]
    report = diversity_report(items, out, clusters=cluster_balance([6] * 10))
    assert report["input"]["n"] == 60 and report["output"]["n"] == 10
    assert report["output"]["modalities"] == {"CT": 5, "MRI": 4, "X-ray": 1}
    assert report["input"]["labels"] == {"A": 15, "B": 15, "C": 15, "D": 15}
    assert report["input"]["distinct_images"] == 30 and report["output"]["distinct_questions"] == 10
    # Brute force in the seed's space: question TF-IDF (512) + image-path TF-IDF x 0.25, unit rows.
    q = TfidfVectorizer(max_features=512).fit_transform([it.question for it in items])
    im = TfidfVectorizer().fit_transform([it.image for it in items]).multiply(0.25)
    X = normalize(hstack([q, im])).toarray()
    S = X @ X[::6].T
    assert report["output"]["mean_pairwise_cosine_distance"] == pytest.approx(
        np.mean([1 - S[6 * i, j] for i in range(10) for j in range(10) if i != j]), abs=1e-6)
    assert report["output"]["coverage"] == pytest.approx(np.mean(1 - S.max(axis=1)), abs=1e-6)
    assert report["input"]["coverage"] == 0.0
    assert mean_pairwise_cosine_distance(X[:1]) is None
    json_path, md_path = write_diversity_report(report, tmp_path)
    assert json.loads(json_path.read_text())["output"]["n"] == 10
    markdown = md_path.read_text()
    assert "| distinct images | 30 | 10 |" in markdown
    assert f"| {report['output']['coverage']:.4f} |" in markdown and "outliers" in markdown
    assert "| 10 | 6 | 6.0 | 6 | 0 | 0.0 |" in markdown
    with pytest.raises(ValueError, match="not in the input"):
        diversity_report(items[:5], items[5:7])


@pytest.mark.parametrize("name", ["kcenter_svd", "cover_spread"])
def test_sample_stage_reports_diversity(compose, name):
    cfg = compose("generate", [f"sampler={name}", "sampler.n=8"])
    items = synthetic_items()
    out, stats = sample_stage(items, SimpleNamespace(cfg=cfg))
    assert len(out) == 8 and stats.metrics["sampler"] == name
    assert stats.metrics["diversity"] == diversity_report(items, out, stats.metrics.get("clusters"))
    assert ("clusters" in stats.metrics["diversity"]) == (name == "cover_spread")
    assert set(stats.metrics["diversity"]["output"]) >= {"coverage", "outliers",
                                                         "mean_pairwise_cosine_distance"}


def test_default_sampler_is_cover_spread(compose):
    assert compose("generate", []).sampler.name == "cover_spread"


@pytest.mark.slow
def test_embed_kmeans_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = synthetic_items(30)
    out, _ = EmbedKMeansSampler(n=5, pick="centroid")(items)
    assert len(out) == 5 and [it.id for it in EmbedKMeansSampler(n=5, pick="centroid")(items)[0]] == \
        [it.id for it in out]

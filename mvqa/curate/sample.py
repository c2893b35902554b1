"""Step 4: pick a diverse subset of n items.

Every sampler embeds the items (TF-IDF of question text, image path and answer text, weighted, by default),
then selects rows. `kmeans_seed` is exactly the seed's script. `cover_spread` is the default: greedy
k-means++ seeds in the seed's TF-IDF space, each row joins its nearest seed, and each cluster gives the row
that best covers it less its redundancy with the other picks; it spreads wider AND covers the pool better
than `kmeans_seed` at a fraction of the time. `kcenter_svd` (TF-IDF -> TruncatedSVD -> farthest-point picks)
gives the maximum spread but picks outliers. Optional stratified quotas (e.g. per modality or answer label)
run the selection inside each stratum. Same seed -> same rows.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from mvqa.data.records import STRATA_FIELDS, VQAItem
from mvqa.data.stats import StageStats
from mvqa.schemas import schema_default
from mvqa.schemas.sampler import (
    ClusterConf,
    CoverSpreadConf,
    EmbedKMeansConf,
    KCenterSVDConf,
    KMeansSeedConf,
    MiniBatchKMeansConf,
    RandomConf,
    SamplerConf,
    SVDKMeansConf,
)


def tfidf_block(
    texts: Sequence[str], what: str, max_features: int | None = None, dtype: type = np.float64
) -> sp.csr_matrix:
    try:
        return TfidfVectorizer(max_features=max_features, dtype=dtype).fit_transform(texts)
    except ValueError as err:  # sklearn's "empty vocabulary"
        raise ValueError(
            f"sampler: cannot build TF-IDF features of the {what} ({err}); give that part weight 0"
        ) from err


class Sampler:
    """Base: features, k > N handling, stratified quotas and stats. Subclasses implement `select`."""

    name = "base"
    keeps_selection_order = False  # else rows come back in input order
    feature_dtype: type = np.float64

    def __init__(
        self,
        n: int = SamplerConf.n,
        seed: int = 42,
        question_weight: float = SamplerConf.question_weight,
        image_weight: float = SamplerConf.image_weight,
        answer_weight: float = SamplerConf.answer_weight,
        question_max_features: int | None = SamplerConf.question_max_features,
        stratify: Sequence[str] = schema_default(SamplerConf, "stratify"),
        quota: str = SamplerConf.quota,
        name: str | None = None,
    ):
        if n < 1:
            raise ValueError(f"sampler.n must be >= 1, got {n}")
        unknown = [f for f in stratify if f not in STRATA_FIELDS]
        if unknown:
            raise ValueError(
                f"sampler.stratify: unknown field(s) {unknown}; expected some of {list(STRATA_FIELDS)}"
            )
        if quota not in ("proportional", "equal"):
            raise ValueError(f"sampler.quota must be 'proportional' or 'equal', got {quota!r}")
        self.n, self.seed, self.stratify, self.quota = n, seed, list(stratify), quota
        self.weights = {"question": question_weight, "image": image_weight, "answer": answer_weight}
        self.question_max_features = question_max_features
        self.name = name or self.name

    # -- features
    def features(self, items: list[VQAItem]) -> sp.csr_matrix | np.ndarray:
        """The seed's space: hstack of weighted TF-IDF blocks, rows L2-normalised."""
        texts = {
            "question": [it.question for it in items],
            "image": [it.image for it in items],
            "answer": [it.answer for it in items],
        }
        blocks = []
        for part, weight in self.weights.items():
            if weight:
                block = tfidf_block(
                    texts[part],
                    part,
                    self.question_max_features if part == "question" else None,
                    self.feature_dtype,
                )
                blocks.append(block if weight == 1 else block.multiply(weight))
        if not blocks:
            raise ValueError(
                "sampler: question, image and answer weights are all 0; nothing to compare items by"
            )
        return normalize(sp.hstack(blocks).tocsr())

    def select(self, X, k: int) -> np.ndarray:
        """Indices of k distinct rows of X."""
        raise NotImplementedError

    # -- the stage
    def __call__(self, items: list[VQAItem]) -> tuple[list[VQAItem], StageStats]:
        start = time.perf_counter()
        stats = StageStats("sample", n_in=len(items))
        stats.metrics.update(sampler=self.name, n=self.n, seed=self.seed)
        if self.n >= len(items):
            if self.n > len(items):
                stats.warn(
                    f"sampler {self.name}: n={self.n} > {len(items)} items; taking all of them",
                    reason="n_exceeds_pool",
                )
            chosen = np.arange(len(items))
        else:
            X = self.features(items)
            self.cluster_sizes: list[int] = []  # filled by samplers that cluster (per stratum, appended)
            strata = self.strata(items)
            quotas = allocate_quotas({key: len(rows) for key, rows in strata.items()}, self.n, self.quota)
            parts = []
            for key, rows in strata.items():
                if quotas[key]:
                    rows = np.asarray(rows)
                    parts.append(
                        rows if quotas[key] >= len(rows) else rows[self.select(X[rows], quotas[key])]
                    )
            chosen = np.concatenate(parts)
            if not (self.keeps_selection_order and len(strata) == 1):
                chosen = np.sort(chosen)
            if self.cluster_sizes:
                stats.metrics["clusters"] = cluster_balance(self.cluster_sizes)
            if self.stratify:
                stats.metrics["quotas"] = {"/".join(map(str, key)): q for key, q in quotas.items()}
            if len(chosen) < self.n:
                stats.warn(
                    f"sampler {self.name}: {len(chosen)} rows for n={self.n} "
                    "(empty clusters: duplicate rows?)"
                )
        if len(set(chosen.tolist())) != len(chosen):
            raise RuntimeError(f"sampler {self.name} picked a row twice; this is a bug")
        picked = set(chosen.tolist())
        for i, it in enumerate(items):
            if i not in picked:
                stats.drop(it.id, "not_sampled")
        out = [items[i] for i in chosen]
        stats.n_out = len(out)
        stats.metrics["seconds"] = round(time.perf_counter() - start, 4)
        return out, stats

    def strata(self, items: list[VQAItem]) -> dict[tuple, list[int]]:
        if not self.stratify:
            return {(): list(range(len(items)))}
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for i, it in enumerate(items):
            groups[tuple(getattr(it, f) for f in self.stratify)].append(i)
        return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


def cluster_balance(sizes: Sequence[int]) -> dict[str, Any]:
    """How even the clusters behind the picks are: count, min / median / max size, singletons, and the
    coefficient of variation (std / mean; 0 = all equal)."""
    arr = np.asarray(sizes, dtype=float)
    return {
        "count": len(arr),
        "min": int(arr.min()),
        "median": float(np.median(arr)),
        "max": int(arr.max()),
        "singletons": int((arr == 1).sum()),
        "cv": round(float(arr.std() / arr.mean()), 4),
    }


def allocate_quotas(sizes: dict[tuple, int], n: int, mode: str = "proportional") -> dict[tuple, int]:
    """Split n over strata: proportional to size (largest remainder) or equal (water-filling), each capped
    by its size. Ties go to the stratum listed first, so the split is deterministic."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    if mode == "proportional":
        exact = {k: n * s / total for k, s in sizes.items()}
        quotas = {k: int(v) for k, v in exact.items()}
        by_remainder = sorted(
            sizes, key=lambda k: -(exact[k] - quotas[k])
        )  # stable: listed order breaks ties
        for k in by_remainder[: n - sum(quotas.values())]:
            quotas[k] += 1
        return quotas
    quotas, left, open_ = dict.fromkeys(sizes, 0), n, [k for k in sizes if sizes[k]]
    while left and open_:
        share, extra = divmod(left, len(open_))
        for i, k in enumerate(open_):
            quotas[k] += min(share + (i < extra), sizes[k] - quotas[k])
        left = n - sum(quotas.values())
        open_ = [k for k in open_ if quotas[k] < sizes[k]]
    return quotas


# ------------------------------------------------------------------------------------------------ samplers
class RandomSampler(Sampler):
    """Uniform without replacement: the baseline."""

    name = RandomConf.name

    def features(self, items):
        return np.zeros((len(items), 0))

    def select(self, X, k):
        return np.random.default_rng(self.seed).choice(X.shape[0], size=k, replace=False)


class KMeansSeedSampler(Sampler):
    """Exactly the seed (analyze_trace.py): KMeans(k, random_state=seed, n_init="auto") on its TF-IDF space,
    then per cluster in cluster order `cluster_df.sample(n=1, random_state=seed)`. Rows come back in cluster
    order like the seed's CSV; an empty cluster is skipped as the seed did."""

    name = KMeansSeedConf.name
    keeps_selection_order = True

    def select(self, X, k):
        labels = KMeans(n_clusters=k, random_state=self.seed, n_init="auto").fit_predict(X)
        sizes = np.bincount(labels, minlength=k)
        self.cluster_sizes += sizes[sizes > 0].tolist()
        picks = []
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members):
                # pandas' DataFrame.sample(n=1, random_state=seed): a fresh RandomState per cluster.
                picks.append(
                    members[np.random.RandomState(self.seed).choice(len(members), size=1, replace=False)[0]]
                )
        return np.asarray(picks, dtype=int)


class ClusterSampler(Sampler):
    """k-means variants: one row per cluster, random (seeded) or nearest to the centroid."""

    def __init__(self, pick: str = ClusterConf.pick, **kwargs: Any):
        super().__init__(**kwargs)
        if pick not in ("random", "centroid"):
            raise ValueError(f"sampler.pick must be 'random' or 'centroid', got {pick!r}")
        self.pick = pick

    def cluster(self, X, k) -> tuple[Any, np.ndarray, np.ndarray]:  # (features clustered, labels, centres)
        raise NotImplementedError

    def select(self, X, k):
        Z, labels, centers = self.cluster(X, k)
        rng = np.random.default_rng(self.seed)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(k + 1))
        self.cluster_sizes += [int(b - a) for a, b in itertools.pairwise(bounds) if b > a]
        picks = []
        for c in range(k):
            members = order[bounds[c] : bounds[c + 1]]
            if not len(members):
                continue
            if self.pick == "random":
                picks.append(members[rng.integers(len(members))])
            else:
                rows = Z[members]
                sq = np.asarray(rows.multiply(rows).sum(1)).ravel() if sp.issparse(rows) else (rows**2).sum(1)
                dist = sq - 2 * np.asarray(rows @ centers[c]).ravel()  # |x - c|^2 up to the constant |c|^2
                picks.append(members[int(np.argmin(dist))])
        return np.asarray(picks, dtype=int)


class MiniBatchKMeansSampler(ClusterSampler):
    name = MiniBatchKMeansConf.name

    def __init__(self, batch_size: int = MiniBatchKMeansConf.batch_size, **kwargs: Any):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    def cluster(self, X, k):
        km = MiniBatchKMeans(
            n_clusters=k, batch_size=self.batch_size, random_state=self.seed, n_init="auto"
        ).fit(X)
        return X, km.labels_, km.cluster_centers_


def svd_reduce(X, n_components: int, n_iter: int, seed: int) -> np.ndarray:
    """LSA: TruncatedSVD then L2-normalise, so Euclidean distance ranks like cosine. Falls back to the dense
    features when they have too few dimensions to reduce."""
    d = min(n_components, X.shape[1] - 1, X.shape[0] - 1)
    if d < 2:
        return normalize(X.toarray() if sp.issparse(X) else X).astype(np.float32)
    # One BLAS thread (here and in farthest_point_order): the dense steps are small, and threaded BLAS waiting
    # on busy cores made them 10-20x slower on a shared machine (3.7 s instead of 0.1 s at 12.8k rows).
    with threadpool_limits(limits=1, user_api="blas"):
        Z = TruncatedSVD(d, algorithm="randomized", n_iter=n_iter, random_state=seed).fit_transform(X)
    return normalize(Z).astype(np.float32)


class SVDKMeansSampler(ClusterSampler):
    """TF-IDF -> TruncatedSVD -> k-means. `init="kcenter"` starts k-means from the farthest-point picks (one
    run, ~7x faster than k-means++ at k=1000 and more spread out); "k-means++" is sklearn's default."""

    name = SVDKMeansConf.name

    def __init__(
        self,
        n_components: int = SVDKMeansConf.n_components,
        svd_iter: int = SVDKMeansConf.svd_iter,
        init: str = SVDKMeansConf.init,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if init not in ("kcenter", "k-means++", "random"):
            raise ValueError(f"sampler.init must be 'kcenter', 'k-means++' or 'random', got {init!r}")
        self.n_components, self.svd_iter, self.init = n_components, svd_iter, init

    def cluster(self, X, k):
        Z = svd_reduce(X, self.n_components, self.svd_iter, self.seed)
        init = Z[farthest_point_order(Z, k, self.seed)] if self.init == "kcenter" else self.init
        km = KMeans(
            n_clusters=k, init=init, n_init=1 if self.init == "kcenter" else "auto", random_state=self.seed
        ).fit(Z)
        return Z, km.labels_, km.cluster_centers_


class EmbedKMeansSampler(ClusterSampler):
    """k-means on MiniLM sentence embeddings of the question (and answer) text; image ids as TF-IDF."""

    name = EmbedKMeansConf.name

    def __init__(
        self,
        batch_size: int = EmbedKMeansConf.batch_size,
        device: str = EmbedKMeansConf.device,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.batch_size, self.device = batch_size, device

    def features(self, items):
        from mvqa.curate.difficulty import minilm_embed

        blocks = []
        for part, texts in (
            ("question", [it.question for it in items]),
            ("answer", [it.answer for it in items]),
        ):
            if self.weights[part]:
                blocks.append(self.weights[part] * minilm_embed(texts, self.batch_size, self.device))
        if self.weights["image"]:
            image = tfidf_block([it.image for it in items], "image").multiply(self.weights["image"])
            return normalize(sp.hstack([*map(sp.csr_matrix, blocks), image]).tocsr())
        if not blocks:
            raise ValueError("sampler embed_kmeans: question, image and answer weights are all 0")
        return normalize(np.hstack(blocks))

    def cluster(self, X, k):
        km = KMeans(n_clusters=k, random_state=self.seed, n_init="auto").fit(X)
        return X, km.labels_, km.cluster_centers_


def farthest_point_order(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-center (Gonzalez): start at a seeded random row, then repeatedly take the row farthest (in
    cosine distance, Z unit rows) from everything taken so far. Ties go to the lowest index."""
    first = int(np.random.default_rng(seed).integers(Z.shape[0]))
    picks = [first]
    with threadpool_limits(limits=1, user_api="blas"):
        nearest = 1.0 - Z @ Z[first]
        nearest[first] = -np.inf
        for _ in range(k - 1):
            i = int(np.argmax(nearest))
            picks.append(i)
            np.minimum(nearest, 1.0 - Z @ Z[i], out=nearest)
            nearest[i] = -np.inf  # exact duplicates of a pick stay selectable only after every other row
    return np.asarray(picks, dtype=int)


class KCenterSVDSampler(Sampler):
    """Maximum spread, picks outliers: the seed's TF-IDF space (float32) -> TruncatedSVD -> greedy
    farthest-point picks. Farthest-point takes odd phrasings and rare figure names first, so it covers the
    pool worse than a random pick (see bench/sampler.py). Cost: one SVD plus k passes of an (N x d)
    mat-vec."""

    name = KCenterSVDConf.name
    feature_dtype = np.float32

    def __init__(
        self,
        n_components: int = KCenterSVDConf.n_components,
        svd_iter: int = KCenterSVDConf.svd_iter,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.n_components, self.svd_iter = n_components, svd_iter

    def select(self, X, k):
        return farthest_point_order(svd_reduce(X, self.n_components, self.svd_iter, self.seed), k, self.seed)


class RowSimilarity:
    """Cosine similarities of a few rows of X to every row of a target (X, or the rows `rows` of X), all rows
    L2-normalised. A product X @ (a few rows) spends most of its work on the frequent features ("what",
    "the", "jpg": a question's words are mostly those), so those are kept as a small dense
    (features x target rows) block multiplied by BLAS, and the rare rest goes through the target's inverted
    index: only target rows that share a rare feature with a probed row are touched. Exact up to float
    rounding; features in at least `dense_share` of the target rows (and at least 2) count as frequent, so
    the dense block has at most (mean nonzeros per row) / dense_share features. 1/8 was the fastest of
    1/4 .. 1/64 on the real 12.8k rows (13 dense features); there the whole cover_spread call got 1.7-1.9x
    faster than with sparse X @ (dense block of the trial rows)."""

    def __init__(self, X: sp.csr_matrix, rows: np.ndarray | None = None, dense_share: float = 1 / 8):
        self.X = X
        target = X if rows is None else X[rows]
        self.n = target.shape[0]
        df = np.bincount(target.indices, minlength=X.shape[1])
        frequent = np.flatnonzero(df >= max(2.0, dense_share * self.n))
        self.slot = np.full(X.shape[1], -1)
        self.slot[frequent] = np.arange(len(frequent))
        self.dense = np.ascontiguousarray(target[:, frequent].T.toarray())  # frequent features x target rows
        self.index = target.T.tocsr()  # feature -> (target row, value); read for the rare features only
        self.index_sizes, self.row_sizes = np.diff(self.index.indptr), np.diff(X.indptr)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """len(rows) x target rows: the similarity of each of X[rows] to every target row."""
        X, index = self.X, self.index
        starts, sizes = X.indptr[rows], self.row_sizes[rows]
        at = _ranges(starts, sizes)
        feature, which, value = X.indices[at], np.repeat(np.arange(len(rows)), sizes), X.data[at]
        slot = self.slot[feature]
        frequent = slot >= 0
        weights = np.zeros((len(rows), self.dense.shape[0]), dtype=self.dense.dtype)
        weights[which[frequent], slot[frequent]] = value[frequent]
        rare = ~frequent
        starts, sizes = index.indptr[feature[rare]], self.index_sizes[feature[rare]]
        at = _ranges(starts, sizes)
        sims = weights @ self.dense
        # A target row can share several rare features with one probed row: add.at sums repeated positions.
        np.add.at(
            sims.reshape(-1),
            np.repeat(which[rare], sizes) * self.n + index.indices[at],
            index.data[at] * np.repeat(value[rare], sizes),
        )
        return sims


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The concatenation of range(s, s + n) for each (s, n)."""
    return np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())


def kmeanspp_clusters(
    X: sp.csr_matrix,
    k: int,
    seed: int,
    trials: int | None = None,
    probe_rows: int = 16384,
    spread_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; sklearn's 2 + ln k local trials) on
    L2-normalised sparse rows with the cosine distance d: each step draws `trials` rows with probability
    proportional to d^2 (d = distance to the nearest seed so far), so near-duplicates of a seed have almost no
    chance and an isolated row just one draw's worth. Of the trials it keeps the one that leaves the lowest
        mean(d)  +  spread_weight * 2 / (k(k-1)) * (its similarity to the seeds so far),
    the coverage the picks are judged by plus the share of the mean pairwise similarity it would add, i.e. a
    greedy step on coverage - spread (sklearn compares trials on sum(d^2), the k-means potential; on the
    synthetic world that put too many seeds into its largest question groups and lost spread to kmeans_seed at
    7 of 8 sampler seeds). Up to `probe_rows` rows the trials are compared on every row; past that on a fixed
    seeded sample of that many rows (the same choice in expectation, at a fraction of the cost), and the kept
    seed updates every row's distance exactly. A probe of 4096 rows at 12.8k was 1.7x faster but compared
    isolated trial rows too coarsely: twice the outliers among the picks (101 vs 48 of 1,000, measured with
    the sum(d^2) choice). No SVD; the similarities come from RowSimilarity.
    Returns the seeds' rows and, for every row, the position of its most similar seed (the first one on a
    tie): each kept seed takes over the rows it is strictly closer to, so no rows x seeds pass is needed
    after."""
    n_rows = X.shape[0]
    trials = trials or 2 + int(np.log(k))
    rng = np.random.default_rng(seed)
    seeds = [int(rng.integers(n_rows))]
    probe = None if n_rows <= probe_rows else np.sort(rng.choice(n_rows, probe_rows, replace=False))
    everyone = RowSimilarity(X)
    compare = everyone if probe is None else RowSimilarity(X, probe)
    labels = np.zeros(n_rows, dtype=int)
    redundancy = 2.0 * spread_weight / (k * (k - 1)) if k > 1 else 0.0
    seed_sum = np.zeros(X.shape[1])  # the sum of the seeds' rows, for their similarity to a trial row

    def add_to_seed_sum(row: int) -> None:
        at = slice(X.indptr[row], X.indptr[row + 1])
        seed_sum[X.indices[at]] += X.data[at]  # a row's feature indices are distinct

    def similarity_to_seeds(rows: np.ndarray) -> np.ndarray:
        sizes = X.indptr[rows + 1] - X.indptr[rows]
        at = _ranges(X.indptr[rows], sizes)
        return np.bincount(np.repeat(np.arange(len(rows)), sizes), X.data[at] * seed_sum[X.indices[at]],
                           minlength=len(rows))

    add_to_seed_sum(seeds[0])
    with threadpool_limits(limits=1, user_api="blas"):
        nearest = np.maximum(1.0 - everyone(np.asarray(seeds))[0], 0.0)
        nearest[seeds[0]] = 0.0  # float rounding can leave a row a hair away from itself
        for _ in range(k - 1):
            cum = np.cumsum(nearest * nearest, dtype=np.float64)
            if cum[-1] <= 0:  # every row duplicates a seed: take unseen rows in order (they win no rows)
                rest = np.setdiff1d(np.arange(n_rows), seeds)[: k - len(seeds)]
                return np.concatenate([np.asarray(seeds), rest]).astype(int), labels
            cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1], side="right"), n_rows - 1)
            dist = compare(cand)  # similarities, turned into distances in place
            np.subtract(1.0, dist, out=dist)
            np.minimum(dist, (nearest if probe is None else nearest[probe])[None, :], out=dist)
            score = dist.mean(axis=1)
            if redundancy:
                score += redundancy * similarity_to_seeds(cand)
            pick = int(np.argmin(score))
            best = int(cand[pick])
            # the winner's distances: already there (capped by nearest), else computed on every row
            new = dist[pick] if probe is None else 1.0 - everyone(np.asarray([best]))[0]
            closer = new < nearest
            labels[closer] = len(seeds)
            nearest[closer] = np.maximum(new[closer], 0.0)
            seeds.append(best)
            add_to_seed_sum(best)
            labels[best], nearest[best] = len(seeds) - 1, 0.0
    return np.asarray(seeds, dtype=int), labels


class CoverSpreadSampler(Sampler):
    """The default: picks that cover the pool and spread, with few outliers.

    1. k seeds by greedy k-means++ in the sampler's TF-IDF space (kmeanspp_clusters): drawn by squared cosine
       distance, so spread out but where the rows are (an isolated row is rarely a seed), and of each step's
       trials the one that covers best less seeding_spread_weight times its redundancy with the seeds;
    2. every row joins its most similar seed (exact cosine, tracked while seeding), giving k clusters;
    3. from each cluster the row c maximising  x_c . sum(cluster) / N  -  w * 2 / (k(k-1)) * x_c . sum(other
       picks): its share of the pool's coverage minus its share of the picks' pairwise similarity, i.e. a
       coordinate-ascent step on  spread - coverage  (w = spread_weight), repeated until the picks settle
       (at most `rounds` times).
    Costs k steps of `trials` similarity rows (RowSimilarity) and a few sparse mat-vecs; no SVD, no rows x
    picks product and no k-means iterations.
    """

    name = CoverSpreadConf.name
    feature_dtype = np.float32

    def __init__(
        self,
        trials: int | None = CoverSpreadConf.trials,
        spread_weight: float = CoverSpreadConf.spread_weight,
        rounds: int = CoverSpreadConf.rounds,
        seeding_spread_weight: float = CoverSpreadConf.seeding_spread_weight,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if trials is not None and trials < 1:
            raise ValueError(f"sampler.trials must be >= 1 (or null for 2 + ln n), got {trials}")
        if spread_weight < 0 or seeding_spread_weight < 0 or rounds < 1:
            raise ValueError(
                "sampler.spread_weight and sampler.seeding_spread_weight must be >= 0 and sampler.rounds "
                f">= 1, got {spread_weight}, {seeding_spread_weight}, {rounds}"
            )
        self.trials, self.spread_weight, self.rounds = trials, spread_weight, rounds
        self.seeding_spread_weight = seeding_spread_weight

    def select(self, X, k):
        X = sp.csr_matrix(X)
        _, labels = kmeanspp_clusters(X, k, self.seed, self.trials,
                                      spread_weight=self.seeding_spread_weight)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(k + 1))
        clusters = [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        self.cluster_sizes += [len(c) for c in clusters]
        covers = within_cluster_similarity(X, labels)
        covers /= X.shape[0]
        redundancy = 2.0 * self.spread_weight / (k * (k - 1)) if k > 1 else 0.0
        cluster_of = np.empty(X.shape[0], dtype=int)
        for j, c in enumerate(clusters):
            cluster_of[c] = j
        picks = _best_per_cluster(covers, cluster_of, len(clusters))
        for _ in range(self.rounds):
            if not redundancy:
                break
            total = np.asarray(X[picks].sum(axis=0)).ravel()
            own = np.asarray(
                X.multiply(X[picks[cluster_of]]).sum(axis=1)
            ).ravel()  # sim to its cluster's pick
            score = covers - redundancy * (X @ total - own)
            new = _best_per_cluster(score, cluster_of, len(clusters))
            if np.array_equal(new, picks):
                break
            picks = new
        if len(picks) < k:  # duplicate rows left a seed's cluster empty: next-best rows by coverage share
            rest = np.setdiff1d(np.argsort(-covers, kind="stable"), picks, assume_unique=True)
            picks = np.concatenate([picks, rest[: k - len(picks)]])
        return picks.astype(int)


def within_cluster_similarity(X: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """x_i . sum of the rows in i's cluster, for every row, without a loop over clusters: the cluster sums
    are kept only on the (cluster, feature) pairs that occur."""
    per_row = np.diff(X.indptr)
    key = np.repeat(labels.astype(np.int64), per_row) * X.shape[1] + X.indices
    _, inverse = np.unique(key, return_inverse=True)
    sums = np.bincount(inverse, weights=X.data)
    return np.bincount(
        np.repeat(np.arange(X.shape[0]), per_row), weights=X.data * sums[inverse], minlength=X.shape[0]
    )


def _best_per_cluster(score: np.ndarray, cluster_of: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per cluster (0..n_clusters-1), the row with the highest score; ties to the lowest row index."""
    order = np.lexsort((np.arange(len(score)), -score, cluster_of))
    first = np.r_[True, cluster_of[order][1:] != cluster_of[order][:-1]]
    return order[first][:n_clusters]


# ----------------------------------------------------------------------------------------------- entry points
def sample(items: list[VQAItem], cfg: Any) -> tuple[list[VQAItem], StageStats]:
    """Sample with a Sampler, or with a `sampler/` config node (instantiated from its `_target_`)."""
    if not isinstance(cfg, Sampler):
        from hydra.utils import instantiate

        cfg = instantiate(cfg, _convert_="all")
    return cfg(items)


def sample_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    """The pipeline's `sample` stage. The diversity report (input vs output) rides in the stats, so a cached
    rerun still has it; the pipeline writes it to the run dir (write_diversity_report)."""
    from mvqa.curate.diversity import diversity_report

    out, stats = sample(items, ctx.cfg.sampler)
    stats.metrics["diversity"] = diversity_report(items, out, stats.metrics.get("clusters"))
    return out, stats

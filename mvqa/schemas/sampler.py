"""Schemas of the `sampler/` group (mvqa.curate.sample). Defaults are the seed's sampler settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II

GROUP = "sampler"


@dataclass
class SamplerConf:
    _target_: str = "mvqa.curate.sample.CoverSpreadSampler"
    name: str = "cover_spread"
    n: int = 1000
    # Follows the top-level `seed` (a seed sweep samples a new set); sampler.seed=42 is the seed's
    # random_state.
    seed: int = II("seed")
    # Feature weights: TF-IDF of question text, of the image path (the seed: 0.25) and of the answer text.
    question_weight: float = 1.0
    image_weight: float = 0.25
    answer_weight: float = 0.0
    question_max_features: int | None = 512
    # Item fields to stratify by (modality, answer_label, content_type, source, split); empty: no strata.
    stratify: list[str] = field(default_factory=list)
    # proportional: quotas follow stratum sizes; equal: the same quota per stratum (capped by its size).
    quota: str = "proportional"


@dataclass
class KMeansSeedConf(SamplerConf):
    _target_: str = "mvqa.curate.sample.KMeansSeedSampler"
    name: str = "kmeans_seed"


@dataclass
class RandomConf(SamplerConf):
    _target_: str = "mvqa.curate.sample.RandomSampler"
    name: str = "random"


@dataclass
class CoverSpreadConf(SamplerConf):
    # Local trials per k-means++ seed; null: sklearn's 2 + ln n.
    trials: int | None = None
    # w in the per-cluster choice: coverage share - w * redundancy with the other picks (1: spread -
    # coverage).
    spread_weight: float = 1.0
    # At most this many re-choices per cluster against the latest picks (stops when they settle).
    rounds: int = 3
    # w in the k-means++ trial choice: mean distance to the nearest seed + w * redundancy with the seeds.
    # 0.02-0.05 beat kmeans_seed on spread and coverage at 16 of 16 seeds on SLAKE and the world and 3 of 3
    # on the real 12.8k rows; 0 lost on the world at 6 of 8 seeds, 0.1 at 4 of 8, 0.25 and more at all.
    seeding_spread_weight: float = 0.03


@dataclass
class KCenterSVDConf(SamplerConf):
    _target_: str = "mvqa.curate.sample.KCenterSVDSampler"
    name: str = "kcenter_svd"
    n_components: int = 64
    svd_iter: int = 1


@dataclass
class ClusterConf(SamplerConf):
    # random: one seeded random row per cluster; centroid: the row nearest the cluster centre.
    pick: str = "random"


@dataclass
class MiniBatchKMeansConf(ClusterConf):
    _target_: str = "mvqa.curate.sample.MiniBatchKMeansSampler"
    name: str = "minibatch_kmeans"
    batch_size: int = 1024


@dataclass
class SVDKMeansConf(ClusterConf):
    _target_: str = "mvqa.curate.sample.SVDKMeansSampler"
    name: str = "svd_kmeans"
    n_components: int = 128
    svd_iter: int = 5
    # kcenter: start k-means from the farthest-point picks (fast, deterministic); k-means++ | random:
    # sklearn's.
    init: str = "kcenter"


@dataclass
class EmbedKMeansConf(ClusterConf):
    _target_: str = "mvqa.curate.sample.EmbedKMeansSampler"
    name: str = "embed_kmeans"
    batch_size: int = 64
    device: str = "cpu"


SCHEMAS = {
    "schema_cover_spread": CoverSpreadConf,
    "schema_kcenter_svd": KCenterSVDConf,
    "schema_kmeans_seed": KMeansSeedConf,
    "schema_random": RandomConf,
    "schema_minibatch_kmeans": MiniBatchKMeansConf,
    "schema_svd_kmeans": SVDKMeansConf,
    "schema_embed_kmeans": EmbedKMeansConf,
}

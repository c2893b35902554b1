"""Schema of `dataset/synthetic`: the embedded synthetic world (mvqa.data.synthetic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II

from mvqa.schemas.dataset import DatasetConf

GROUP = "dataset"

# The default question mix, chosen once before the study was measured: the six perception types one share
# each, the three textbook types two each, so half the items need the textbook. Hard real questions (the
# seed's hardest 15% of PMC-VQA) mostly combine findings with knowledge, but the difficulty filter must have
# perception items to pass over: an even split gives it both in quantity.
QUESTION_MIX = {"modality": 1.0, "location": 1.0, "count": 1.0, "size": 1.0, "presence": 1.0,
                "modality_location": 1.0, "diagnosis": 2.0, "stage": 2.0, "largest": 2.0}


@dataclass
class SyntheticConf(DatasetConf):
    _target_: str = "mvqa.data.synthetic.read_synthetic"
    name: str = "synthetic"
    # Worlds are cached here, one directory per parameter hash, and reused across runs.
    root: str = II("paths.cache") + "/synthetic"
    split: str = "train"  # train | val | test
    val_split: str | None = "val"
    test_split: str | None = "test"
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 300
    image_size: int = 64
    seed: int = II("seed")
    # Per-item difficulty of ordinary items (noise up, contrast and lesion size down), 0..1.
    difficulty: float = 0.1
    # Share of items made really hard (difficulty drawn from [0.6, 1]).
    hard_fraction: float = 0.1
    # Share of each question type asked as yes/no (closed) and open (answered in words); the rest are
    # 4-choice.
    closed_share: float = 0.2
    open_share: float = 0.2
    # Relative weight of each question type (mvqa.data.synthetic.QUESTION_TYPES; 0 or absent: not asked).
    question_mix: dict[str, float] = field(default_factory=lambda: dict(QUESTION_MIX))
    # Add one open "describe the findings" item per image (the caption stage of the demo base's bootstrap).
    describe: bool = False


SCHEMAS = {"schema_synthetic": SyntheticConf}

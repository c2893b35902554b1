"""Schema of `dataset/auto`, train.py's default: the newest curation run of the synthetic world, else the
world."""

from __future__ import annotations

from dataclasses import dataclass, field

from mvqa.schemas.dataset_synthetic import SyntheticConf

GROUP = "dataset"


@dataclass
class AutoConf(SyntheticConf):
    """The synthetic world's fields (used when no curation run is found) plus where curation runs are looked
    for.

    Resolved once by train.py (mvqa.data.auto.resolve_dataset, a new config) into `dataset=curated` with the
    newest run's final.csv, or into `dataset=synthetic` with these fields; `dataset=synthetic|curated|...`
    skips the search. """

    _target_: str = "mvqa.data.auto.read_auto"
    name: str = "auto"
    # Searched for generate.py run dirs (final.csv + items.jsonl of synthetic items + images/), relative to
    # the launch dir like hydra.run.dir and hydra.sweep.dir; [] always picks the template traces.
    curation_runs: list[str] = field(default_factory=lambda: ["outputs/generate", "multirun/generate"])


SCHEMAS = {"schema_auto": AutoConf}

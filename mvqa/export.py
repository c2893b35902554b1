"""`python -m mvqa.export RUN_DIR OUT_DIR [--eval EVAL_RUN_DIR ...]`: a train.py run's adapter merged into its
base as a standalone Hugging Face checkpoint with a model card (see mvqa/models/export.py)."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mvqa.export", description=__doc__)
    parser.add_argument("run_dir", help="a train.py run dir (holds adapter/, metrics.json, .hydra/)")
    parser.add_argument("out_dir", help="where the merged checkpoint is written")
    parser.add_argument("--eval", action="append", default=[], metavar="EVAL_RUN_DIR",
                        help="an evaluate.py run of this adapter whose numbers go into the model card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mvqa.models.export import export_run

    print(export_run(args.run_dir, args.out_dir, args.eval))


if __name__ == "__main__":
    main()

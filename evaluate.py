"""Evaluation (step 7): `python evaluate.py [overrides]`; see conf/evaluate.yaml."""
# A thin wrapper: the entry lives in mvqa/cli.py (installed as the console script mvqa-evaluate).
from mvqa.cli import evaluate as main

if __name__ == "__main__":
    main()

"""Curation (steps 1-4): `python generate.py [overrides]`; see conf/generate.yaml."""
# A thin wrapper: the entry lives in mvqa/cli.py (installed as the console script mvqa-generate).
from mvqa.cli import generate as main

if __name__ == "__main__":
    main()

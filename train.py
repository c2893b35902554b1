"""Fine-tuning (steps 5-6): `python train.py [overrides]`; see conf/train.yaml."""
# A thin wrapper: the entry lives in mvqa/cli.py (installed as the console script mvqa-train).
from mvqa.cli import train as main

if __name__ == "__main__":
    main()

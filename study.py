"""The data-selection study (s1's Table 2 for this project): `python study.py [overrides]`, or
`python -m mvqa.study`; see conf/study.yaml and mvqa/study.py."""

from mvqa.study import main

if __name__ == "__main__":
    main()

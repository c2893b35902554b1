"""Read and validate a 200,000-row PMC-VQA-format CSV made by resampling the MVQA1k release.

Baseline in the same run: a plain `pandas.read_csv` of the same file (no validation, no records). The reader
adds column matching, prefix stripping, label and path checks and one VQAItem per row. Aim: under 10 s.

    python bench/read_large.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from mvqa.data.readers import PMC_VQA_COLUMNS, read_pmc_vqa
from mvqa.data.storage import write_json

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT.parent / "shared" / "data" / "mvqa1k" / "sampled_final.csv"
RESULT = ROOT / "bench" / "results" / "read_large.json"


def make_csv(rows: int, out: Path, seed: int = 0) -> Path:
    """Resample the release's PMC-VQA columns to `rows` rows, written with PMC-VQA's own column names."""
    release = pd.read_csv(RELEASE, dtype=str, keep_default_na=False)
    pmc_names = [PMC_VQA_COLUMNS[k] for k in ("image", "question", "answer")] + PMC_VQA_COLUMNS["choices"]
    release = release.rename(
        columns={c: n for c in release.columns for n in pmc_names if c.lower() == n.lower()})
    frame = release[[*pmc_names, PMC_VQA_COLUMNS["answer_label"]]].sample(n=rows, replace=True,
                                                                          random_state=seed)
    frame.to_csv(out, index=False)
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = make_csv(args.rows, Path(tmp) / "pmc_vqa_large.csv")
        size_mb = path.stat().st_size / 1e6
        items, stats = read_pmc_vqa(path)  # warm-up, and the validation result reported below
        if not len(items) == args.rows == stats.n_out:
            raise SystemExit(f"the reader lost rows: {stats.summary()}")
        baseline_s = best_of(lambda: pd.read_csv(path, dtype=str, keep_default_na=False), args.repeats)
        reader_s = best_of(lambda: read_pmc_vqa(path), args.repeats)

    figures = {
        "rows": args.rows,
        "file_mb": round(size_mb, 1),
        "reader_s": round(reader_s, 3),
        "reader_rows_per_s": round(args.rows / reader_s),
        "baseline_pandas_read_csv_s": round(baseline_s, 3),
        "baseline_rows_per_s": round(args.rows / baseline_s),
        "ratio_reader_to_baseline_time": round(reader_s / baseline_s, 2),
        "under_10s": reader_s < 10,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "pandas": pd.__version__,
    }
    print(f"{args.rows:,} rows, {size_mb:.1f} MB")
    print(f"pandas.read_csv (baseline): {baseline_s:.2f} s  {figures['baseline_rows_per_s']:,} rows/s")
    print(f"read_pmc_vqa (validated):   {reader_s:.2f} s  {figures['reader_rows_per_s']:,} rows/s")
    print(f"ratio reader / baseline time: {figures['ratio_reader_to_baseline_time']}x")
    write_json(figures, RESULT)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

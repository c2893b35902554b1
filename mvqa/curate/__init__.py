"""Curation stages (the seed's steps 1-4): difficulty scoring, reasoning traces, correctness filter, diversity
sampling and exports. Each stage maps `list[VQAItem]` to `(list[VQAItem], StageStats)`."""

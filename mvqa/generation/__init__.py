"""Generation engines (HF, vLLM) and s1-style budget forcing of the thinking section."""

from mvqa.generation.budget import BudgetPoint, budget_points
from mvqa.generation.engine import Generation, GenerationParams, GenerationRequest, HFEngine, VLLMEngine

__all__ = [
           "BudgetPoint",
           "Generation",
           "GenerationParams",
           "GenerationRequest",
           "HFEngine",
           "VLLMEngine",
           "budget_points",
]

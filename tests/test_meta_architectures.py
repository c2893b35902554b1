"""The real LLaVA-Med 7B and Qwen2-VL-2B (Med-R1) architectures on the meta device: no weights, no memory.

Run with `-s` to see the trainable/total parameter counts per recipe.
"""

from __future__ import annotations

import copy
import re

import pytest

from mvqa.models.load import build_empty
from mvqa.models.lora import count_parameters, prepare_trainable

LM_PROJ = r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
# decoder layers and the parameter count of the published checkpoint
EXPECTED = {"llava_med": (32, 7.57e9), "med_r1": (28, 2.21e9)}


@pytest.fixture(scope="module")
def empty_models() -> dict:
    """Each architecture built once on the meta device; every test adapts its own copy."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["llava_med", "med_r1"])
@pytest.mark.parametrize("recipe_name", ["lora_r8", "lora_r16_attn_mlp", "llava_lora_r128", "s1_full"])
def test_real_architecture_gets_language_model_adapters_only(compose, empty_models, model_name, recipe_name):
    cfg = compose("common", [f"+model={model_name}", f"+recipe={recipe_name}"])
    if model_name not in empty_models:
        empty_models[model_name] = build_empty(cfg.model)
    model = copy.deepcopy(empty_models[model_name])
    layers, size = EXPECTED[model_name]
    total = count_parameters(model)[1]
    assert abs(total - size) / size < 0.01 and next(model.parameters()).is_meta
    model = prepare_trainable(model, cfg.recipe)
    trainable, total = count_parameters(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.recipe.method == "full":
        assert not any(("vision_tower" in n or "visual" in n) and "merger" not in n for n in names)
    else:
        adapted = [
            n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A")
        ]
        per_layer = 4 if cfg.recipe.target == "attn" else 7
        assert len(adapted) == layers * per_layer and all(re.fullmatch(LM_PROJ, n) for n in adapted)
        lora = {n for n in names if "lora_" in n}
        projector = names - lora
        assert all("multi_modal_projector" in n or "merger" in n for n in projector)
        assert bool(projector) == cfg.recipe.train_projector
    print(
        f"\n{model_name} + {recipe_name}: trainable {trainable:,} / total {total:,} "
        f"({100 * trainable / total:.3f}%)"
    )

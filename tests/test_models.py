"""The model loader: tiny offline models via the real from_pretrained path, configs, tokens, errors."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from mvqa.models import tiny
from mvqa.models.load import load_model, resolve_dtype
from mvqa.models.tiny import build_tiny, cache_path, tiny_conf
from mvqa.schemas.model import ModelConf

CORPUS = [
    "What organ is shown in this CT image? The liver.",
    "The MRI shows a lesion in the left lung.",
    "Which plane is this X-ray taken in? Coronal.",
    "Answer with the letter of the correct choice.",
] * 20
QUESTION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What organ is shown?"}]}
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def unit(family, cache, **fields):
    return tiny_conf(family, size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS, **fields)


@pytest.fixture(scope="session", params=["llava", "qwen2_vl"])
def bundle(request, model_cache):
    return load_model(unit(request.param, model_cache))


@pytest.fixture(scope="session")
def slake_image(shared_data):
    return Image.open(shared_data / "slake" / "imgs" / "xmlab69" / "source.jpg").convert("RGB")


def test_forward_and_generate_with_a_real_image(bundle, slake_image):
    proc, tok = bundle.processor, bundle.tokenizer
    prompt = proc.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert prompt == proc.apply_chat_template(
        QUESTION, tokenize=False, add_generation_prompt=True, chat_template=bundle.chat_template
    )
    enc = proc(text=[prompt], images=[slake_image], return_tensors="pt", add_special_tokens=False)
    n_image = int((enc["input_ids"] == tok.convert_tokens_to_ids(bundle.special_tokens.image)).sum())
    # unit size: 32 px images; LLaVA (32/8)^2 patches (CLS dropped), Qwen2-VL (32/4)^2 patches merged 2x2
    assert n_image == 16
    with torch.no_grad():
        logits = bundle.model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tok)) and torch.isfinite(logits).all()
    out = bundle.model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    assert 0 < len(new) <= 8 and tok.pad_token_id not in new.tolist()
    assert not bundle.model.training and bundle.model.dtype == torch.float32


def test_chat_templates_render_each_models_format(bundle):
    conv = QUESTION + [{"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"}]}]
    text = bundle.processor.apply_chat_template(conv, tokenize=False)
    if bundle.model.config.model_type == "llava":
        assert text == "<s>[INST] <image>\nWhat organ is shown? [/INST] <think>x</think> </s>"
    else:
        assert (
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What organ is shown?<|im_end|>\n"
            "<|im_start|>assistant\n<think>x</think><|im_end|>\n" in text
        )


def test_qwen_image_size_is_fixed_whatever_the_aspect(model_cache):
    proc = load_model(unit("qwen2_vl", model_cache)).processor
    grids = [
        proc(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[Image.new("RGB", size)])[
            "image_grid_thw"
        ].tolist()
        for size in [(40, 30), (200, 20)]
    ]
    assert grids == [[[1, 8, 8]], [[1, 8, 8]]]


def test_think_and_answer_tags_are_single_tokens_kept_by_decode(bundle):
    tok, st = bundle.tokenizer, bundle.special_tokens
    text = f"{st.think_start}look{st.think_end}{st.answer_start}B{st.answer_end}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for tag in (st.think_start, st.think_end, st.answer_start, st.answer_end):
        assert tok.convert_tokens_to_ids(tag) in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_building_twice_reuses_the_cache(model_cache):
    conf = unit("llava", model_cache)
    first = build_tiny(conf)
    stamp = os.stat(first / "model.safetensors").st_mtime_ns
    assert build_tiny(conf) == first and os.stat(first / "model.safetensors").st_mtime_ns == stamp
    assert cache_path(unit("llava", model_cache, hidden=32)) != first  # another config, another entry


def test_concurrent_builders_leave_one_complete_entry(tmp_path):
    conf = unit("qwen2_vl", tmp_path, seed=7)
    paths, errors = [], []

    def build():
        try:
            paths.append(build_tiny(conf))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[0].name]  # no temporary dirs left
    assert load_model(conf).model.config.model_type == "qwen2_vl"


def test_sizes(model_cache):
    small = sum(p.numel() for p in load_model(unit("llava", model_cache, image_size=32)).model.parameters())
    assert 0.1e6 < small < 0.3e6
    assert tiny.resolve_dims(tiny_conf("llava"))["image_size"] == 64  # the demo size fits the 64 px world
    with pytest.raises(ValueError, match="cache_dir '\\$\\{paths.cache\\}/models' is unresolved"):
        build_tiny(tiny_conf("llava"))
    with pytest.raises(ValueError, match="hidden % heads"):
        tiny.resolve_dims(tiny_conf("qwen2_vl", size="unit", hidden=66))


def _bare_checkpoint(path, model_cache):
    """A LLaVA checkpoint whose tokenizer has no think/answer tags and no pad, like a real base model."""
    conf = unit("llava", model_cache)
    raw = tiny.train_tokenizer(CORPUS, 320, ["<s>", "</s>", "<unk>", "<image>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    model, processor = tiny._llava(conf, tiny.resolve_dims(conf), tok)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return ModelConf(name="bare", family="llava", path=str(path), chat_template="mistral_instruct")


def test_missing_tags_are_an_error_when_adding_is_off(tmp_path, model_cache):
    conf = _bare_checkpoint(tmp_path / "bare", model_cache)
    conf.add_special_tokens = False
    with pytest.raises(
        ValueError, match=r"lacks \['<think>', '</think>', '<answer>', '</answer>', 'a pad token'\]"
    ):
        load_model(conf)


def test_missing_tags_are_added_with_embeddings_from_their_pieces(tmp_path, model_cache):
    conf = _bare_checkpoint(tmp_path / "bare", model_cache)
    before = load_model({**vars(conf), "think_tokens_as_text": True})  # adds the pad only
    old_vocab = len(before.tokenizer)
    pieces = before.tokenizer("<think>", add_special_tokens=False)["input_ids"]
    b = load_model(conf)
    tok, emb = b.tokenizer, b.model.get_input_embeddings().weight
    assert len(tok) == old_vocab + 4 and emb.shape[0] == len(tok) and tok.pad_token == "<pad>"
    think = tok.convert_tokens_to_ids("<think>")
    assert len(tok("<think>", add_special_tokens=False)["input_ids"]) == 1
    torch.testing.assert_close(emb[think], before.model.get_input_embeddings().weight[pieces].mean(0))
    assert b.model.config.text_config.pad_token_id == tok.pad_token_id


def test_think_tokens_as_text_leaves_the_vocabulary_alone(tmp_path, model_cache):
    conf = _bare_checkpoint(tmp_path / "bare", model_cache)
    b = load_model({**vars(conf), "think_tokens_as_text": True})
    assert len(b.tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1
    assert b.tokenizer.pad_token == "<pad>"  # a pad is still required for batching


def test_absent_local_weights_name_the_path_and_how_to_get_them(tmp_path):
    conf = ModelConf(
        name="llava_med", family="llava", path=str(tmp_path / "nope"), download_hint="run the converter"
    )
    with pytest.raises(FileNotFoundError, match=r"'llava_med'.*nope.*\n.*run the converter"):
        load_model(conf)


def test_absent_hub_weights_offline_name_the_id(tmp_path):
    conf = ModelConf(
        name="med_r1",
        family="qwen2_vl",
        path="yuxianglai117/Med-R1",
        subfolder="VQA_CT",
        local_files_only=True,
    )
    with pytest.raises(
        FileNotFoundError, match=r"yuxianglai117/Med-R1.*VQA_CT(.|\n)*huggingface-cli download"
    ):
        load_model(conf)


def test_dtype():
    assert resolve_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtype("fp8")


def test_composed_options(compose, tmp_path):
    cfg = compose("common", ["+model=med_r1"])
    assert (cfg.model.family, cfg.model.subfolder, cfg.model.image_size) == (
        "qwen2_vl",
        "VQA_Disease_Diagnosis",
        384,
    )
    assert cfg.model.think_tokens_as_text and "--include 'VQA_Disease_Diagnosis/*'" in cfg.model.download_hint
    assert compose("common", ["+model=llava_med"]).model.chat_template == "mistral_instruct"
    cfg = compose("common", ["+model=tiny_llava", "model.size=unit", f"model.cache_dir={tmp_path}"])
    cfg.model.tokenizer_corpus = CORPUS
    b = load_model(cfg.model)
    assert b.name == "tiny_llava" and b.source.startswith(str(tmp_path))


def test_unknown_model_lists_the_options(compose):
    with pytest.raises(
        Exception, match=r"(?s)model/nope.*llava_med.*med_r1.*qwen2_vl_2b.*tiny_llava.*tiny_qwen2_vl"
    ):
        compose("common", ["+model=nope"])


def test_misspelt_model_key_fails_at_compose(compose):
    with pytest.raises(Exception, match="hiden"):
        compose("common", ["+model=tiny_llava", "model.hiden=3"])

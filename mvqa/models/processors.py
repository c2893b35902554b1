"""Processors that need neither torchvision nor a video stack: PIL image processors only.

`Qwen2VLProcessor` wants a video processor, which needs torchvision; the subclass here takes images only.
"""

from __future__ import annotations

from PIL import Image
from transformers import LlavaImageProcessorPil, Qwen2VLImageProcessorPil, Qwen2VLProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def llava_image_processor(image_size: int, pad_to_square: bool = True) -> LlavaImageProcessorPil:
    """CLIP preprocessing for LLaVA's "pad" aspect ratio: pad to square with the mean colour, resize."""
    return LlavaImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_pad=pad_to_square,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def qwen2_vl_image_processor(patch_size: int, merge_size: int, image_size: int) -> Qwen2VLImageProcessorPil:
    """Qwen2-VL preprocessing pinned to one square size, so every image gives the same number of tokens."""
    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )


def _resize(images, size: int):
    if isinstance(images, Image.Image):
        return images.convert("RGB").resize((size, size), Image.BICUBIC)
    if isinstance(images, (list, tuple)):
        return [_resize(im, size) for im in images]
    raise TypeError(f"expected PIL images (or lists of them), got {type(images).__name__}")


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor for images and text only.

    `fixed_image_size` resizes every image to that square first (Med-R1 was run on 384x384 images); None keeps
    Qwen2-VL's own aspect-preserving resize, whose token count varies with the image.
    """

    def __init__(
        self, image_processor=None, tokenizer=None, chat_template=None, fixed_image_size=None, **kwargs
    ):
        self.fixed_image_size = fixed_image_size
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images=None, text=None, **kwargs):
        if images is not None and self.fixed_image_size:
            images = _resize(images, self.fixed_image_size)
        return super().__call__(images=images, text=text, **kwargs)

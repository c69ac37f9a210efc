"""An image processor for one-channel models (the cluttered-MNIST glimpse model): ViT's operations on luminance.

transformers' pipelines open every image as RGB (`transformers.image_utils.load_image`), so a model with
`num_channels=1` needs a processor that turns RGB back into one grey channel; ViT's own gives three and the model
rightly refuses them. The luminance is ITU-R 601-2 in PIL's fixed-point arithmetic, so an "L" image and its RGB copy
give the same pixels.
"""

import numpy as np
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import ChannelDimension, PILImageResampling, infer_channel_dimension_format

# PIL's "RGB" -> "L": (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
LUMINANCE_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.int64)


def to_luminance(image: np.ndarray) -> np.ndarray:
    """(3 or 4, height, width) RGB(A), channel first, -> (1, height, width) grey; alpha is dropped."""
    rgb = image[:3]
    if rgb.dtype == np.uint8:
        grey = (np.tensordot(LUMINANCE_WEIGHTS, rgb.astype(np.int64), axes=1) + 0x8000) >> 16
        return grey.astype(np.uint8)[None]
    return np.tensordot(LUMINANCE_WEIGHTS / 65536, rgb, axes=1).astype(rgb.dtype)[None]


class GreyImageProcessor(PilBackend):
    r"""
    ViT's image processor (resize, rescale, normalise) with every image turned into one luminance channel first:
    `pixel_values` of shape (batch, 1, height, width). One-channel images pass unchanged.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_attention.image_processing_grey import GreyImageProcessor
    >>> processor = GreyImageProcessor(size={"height": 60, "width": 60}, do_normalize=False)
    >>> processor(Image.new("RGB", (80, 80), (255, 255, 255)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 1, 60, 60])
    ```
    """

    # ViT's settings (`ViTImageProcessorPil`, not imported: importing the package loads no model code), one channel
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5]
    image_std = [0.5]
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = False

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs) -> np.ndarray:
        """The image channel first, as the PIL backend gives it, with RGB(A) turned into luminance."""
        if do_convert_rgb:
            raise ValueError(f"{type(self).__name__} makes one grey channel; do_convert_rgb=True contradicts it.")
        image = super().process_image(image, do_convert_rgb=False, input_data_format=input_data_format, **kwargs)
        if infer_channel_dimension_format(image, num_channels=(1, 3, 4)) != ChannelDimension.FIRST:
            image = np.moveaxis(image, -1, 0)
        if image.shape[0] not in (1, 3, 4):
            raise ValueError(f"Expected an image of 1 (grey), 3 (RGB) or 4 (RGBA) channels, got shape {image.shape}.")
        return image if image.shape[0] == 1 else to_luminance(image)


# saved with its code and an `auto_map`, so a folder loads it through `AutoImageProcessor` with trust_remote_code
GreyImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["GreyImageProcessor"]

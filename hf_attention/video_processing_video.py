"""The video processor of the X-CLIP video models: clips (a video file, frames as arrays or PIL images) -> pixel_values
(batch, frames, channels, height, width), as transformers' `VideoMAEVideoProcessor` does it, on the PIL/NumPy
backend.

transformers' own video processors (`BaseVideoProcessor`) run on torchvision and decode files with torchcodec; this
one is transformers' `VideoProcessorMixin` on its `PilBackend` (the backend of the `*ImageProcessorPil` classes),
decoding files with PyAV (`transformers.video_utils.load_video(..., backend="pyav")`), so
`pipeline("video-classification")` runs it where torchvision and torchcodec are not installed. Frames are resized
(shortest edge), centre-cropped, rescaled to [0, 1] and normalised, frame by frame, with the same PIL operations as
`VideoMAEImageProcessorPil`.
"""

from collections.abc import Callable

import numpy as np
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import (
    default_sample_indices_fn,
    is_valid_video,
    load_video,
    make_batched_metadata,
    make_batched_videos,
)


class VideoTransformerVideoProcessor(VideoProcessorMixin, PilBackend):
    r"""
    Video processor of [`VideoTransformerForVideoClassification`] and [`VideoTextTransformerModel`].

    Takes a video file path (decoded with PyAV), or frames ((frames, height, width, channels) arrays, lists of PIL
    images), one clip or a batch, and returns `pixel_values` of shape (batch, frames, channels, crop height, crop
    width). With `do_sample_frames=True` (what the video-classification pipeline asks for) `num_frames` frames are
    taken at even steps over the clip. Defaults as X-CLIP: 224 shortest edge, 224x224 crop, ImageNet-standard mean
    and std ([0.5] * 3).

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_attention.video_processing_video import VideoTransformerVideoProcessor
    >>> processor = VideoTransformerVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    >>> processor(np.zeros((8, 40, 40, 3), dtype=np.uint8), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 8, 3, 32, 32])
    ```
    """

    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False  # a clip given as frames is used whole unless asked; the pipeline asks
    model_input_names = ["pixel_values"]

    def sample_frames(self, metadata, num_frames: int | None = None, fps: int | float | None = None, **kwargs):
        """Indices of `num_frames` frames at even steps over the clip (or `fps` frames a second)."""
        if fps is not None and num_frames is not None:
            raise ValueError(f"num_frames and fps are exclusive ways to sample frames, got both ({num_frames}, {fps}).")
        num_frames = num_frames if num_frames is not None else self.num_frames
        return default_sample_indices_fn(metadata, num_frames=num_frames, fps=fps if fps is not None else self.fps)

    def _decode_and_sample_videos(
        self,
        videos,
        video_metadata=None,
        do_sample_frames: bool | None = None,
        sample_indices_fn: Callable | None = None,
    ):
        """Files decoded with PyAV (sampled while decoding), frames sampled when asked; (videos, metadata)."""
        if isinstance(videos, str) or (isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], str)):
            paths = [videos] if isinstance(videos, str) else list(videos)
            decoded = [load_video(path, backend="pyav", sample_indices_fn=sample_indices_fn) for path in paths]
            return [video for video, _ in decoded], [metadata for _, metadata in decoded]
        videos = make_batched_videos(videos)
        video_metadata = make_batched_metadata(videos, video_metadata=video_metadata)
        if do_sample_frames and is_valid_video(videos[0]):
            for index, metadata in enumerate(video_metadata):
                metadata.frames_indices = sample_indices_fn(metadata=metadata)
                videos[index] = videos[index][metadata.frames_indices]
        return videos, video_metadata

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        """Every clip as a list of channel-first NumPy frames."""
        if device is not None:
            raise ValueError(f"{type(self).__name__} runs on the CPU (PIL backend); got device={device!r}.")
        settings = dict(do_convert_rgb=do_convert_rgb, input_data_format=input_data_format)
        return [[self.process_image(np.asarray(frame), **settings) for frame in video] for video in videos]

    def _preprocess(self, videos, return_tensors=None, **kwargs) -> BatchFeature:
        """Every frame through the PIL backend's resize, crop, rescale and normalise; clips stacked."""
        kwargs = {"do_pad": False, "pad_size": None, **kwargs, "return_tensors": None}
        clips = [np.stack(PilBackend._preprocess(self, frames, **kwargs)["pixel_values"]) for frames in videos]
        return BatchFeature(data={"pixel_values": clips}, tensor_type=return_tensors)


# saved with its code and an `auto_map`, so a folder loads it through `AutoVideoProcessor` with trust_remote_code
VideoTransformerVideoProcessor.register_for_auto_class("AutoVideoProcessor")


def register_video_processor(config_classes) -> None:
    """Make `AutoVideoProcessor` (and so `pipeline("video-classification")`) pick this processor for the video
    configs. transformers' `AutoVideoProcessor` exists only where torchvision is installed; elsewhere pass the
    processor to the pipeline yourself (`video_processor=VideoTransformerVideoProcessor.from_pretrained(folder)`)."""
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        return
    from transformers import AutoVideoProcessor

    for config_class in config_classes:
        classes = {"torchvision": VideoTransformerVideoProcessor, "pil": VideoTransformerVideoProcessor}
        AutoVideoProcessor.register(config_class, video_processor_classes=classes, exist_ok=True)


__all__ = ["VideoTransformerVideoProcessor", "register_video_processor"]

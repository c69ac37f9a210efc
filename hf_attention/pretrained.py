"""The base class every hf_attention model shares: loading is safetensors-only and fails with a clear message."""

from safetensors import SafetensorError
from transformers import PreTrainedModel


class HFAttentionPreTrainedModel(PreTrainedModel):
    """`PreTrainedModel` that never unpickles and names the file when a checkpoint is corrupt or truncated."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if kwargs.get("use_safetensors") is False:
            raise ValueError("hf_attention loads safetensors weights only; pickled checkpoints are never loaded.")
        kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The safetensors weights of {pretrained_model_name_or_path!r} are corrupt or truncated ({error}). "
                "Save the model again, or delete the cached file and download it again."
            ) from error

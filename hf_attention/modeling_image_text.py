"""A cross-attention vision-language model: contrastive image-text scoring (ITC) and image-text matching (ITM).

Data flow (ALBEF, Li et al. 2021; BLIP, Li et al. 2022):
- images -> vision tower (our ViT) -> patch tokens; the pooled token, projected and normalised, is the image embedding;
- texts -> text tower (our CLIP text model, or any transformers encoder such as BERT) -> token states; the
  pooled text, projected and normalised, is the text embedding;
- ITC: cosine similarities / temperature between every image and every text;
- ITM: a fusion of cross-attention layers over one (image, text) pair (with `fusion_direction="text_to_image"` the text
  tokens query the patches, as BLIP's ITM encoder; with `"image_to_text"` the patches query the text, the seed's
  form), whose first token a linear head reads as (no match, match).
Retrieval scores everything by ITC and re-ranks the top k by ITM log-odds + ITC cosine (BLIP's sum); ITM is
dearer (a fusion pass per pair).
"""

from dataclasses import dataclass
from typing import Any, Unpack

import torch
from huggingface_hub import ModelCard
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .attention import MultiHeadAttention
from .checks import check_input_ids, check_pixel_values
from .configuration_clip_text import CLIPResidualTextConfig
from .configuration_image_text import VisionTextCrossAttentionConfig, check_text_config
from .configuration_vit import as_pair
from .layers import FeedForward, contrastive_loss, normalize_embeddings
from .masks import build_attention_mask, validate_padding_mask
from .modeling_clip_text import CLIPResidualTextModel
from .modeling_vit import VisionTransformerModel
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs

# --- the fusion ---------------------------------------------------------------------------------------------------


class ImageTextFusionLayer(GradientCheckpointingLayer):
    """Pre-norm fusion layer: x + self_attention(norm(x)), x + cross_attention(norm(x), context), x + mlp(norm(x)).

    `x` are the querying modality's tokens (text for "text_to_image", image for "image_to_text") and `context` the
    other modality's; `context_size` is the context's width, projected inside the cross-attention.
    """

    def __init__(self, config: VisionTextCrossAttentionConfig, context_size: int):
        super().__init__()
        hidden_size = config.fusion_hidden_size
        heads, dropout = config.num_fusion_heads, config.attention_probs_dropout_prob
        self.self_attention_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.self_attention = MultiHeadAttention(hidden_size, heads, dropout=dropout, config=config)
        self.cross_attention_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.cross_attention = MultiHeadAttention(
            hidden_size, heads, key_dim=context_size, dropout=dropout, config=config
        )
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(hidden_size, config.fusion_intermediate_size or 4 * hidden_size, config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, context, self_mask=None, cross_mask=None, **kwargs) -> torch.Tensor:
        attended, _ = self.self_attention(self.self_attention_norm(hidden_states), attention_mask=self_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attended)
        attended, _ = self.cross_attention(
            self.cross_attention_norm(hidden_states), context, attention_mask=cross_mask, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))


# --- outputs ------------------------------------------------------------------------------------------------------


@dataclass
class VisionTextCrossAttentionOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        The base model's: the ITC loss (with `return_loss=True`); the retrieval head's: ITC + ITM with hard negatives.
    itm_logits (`torch.FloatTensor` of shape `(pairs, 2)`, *optional*):
        ITM logits (no match, match) of the pairs (image i, text i); computed when there are as many images as
        texts, or one image (or one text), which is broadcast to the others.
    logits_per_image (`torch.FloatTensor` of shape `(num_images, num_texts)`):
        Scaled cosine similarities (ITC) of every image with every text.
    logits_per_text (`torch.FloatTensor` of shape `(num_texts, num_images)`):
        Its transpose.
    text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`):
        Normalised projected embeddings.
    itc_loss, itm_loss (`torch.FloatTensor` of shape `()`, *optional*):
        The two parts of the retrieval head's loss.
    itm_accuracy, itm_match_rate (`torch.FloatTensor` of shape `()`, *optional*):
        With the retrieval head's loss: the share of the ITM pairs it was trained on (the positives and two hard
        negatives each) that the ITM head classifies right, and the share it calls a match. A head that calls
        everything "no match" scores accuracy 2/3 and loss 0.6365 (the entropy of 1/3, 2/3): the collapse to watch.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The fusion's: its input, then each fusion layer's output, (pairs, query_length, fusion_hidden_size).
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        The fusion's self-attention maps, (pairs, heads, queries, queries).
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
        The fusion's cross-attention maps, (pairs, heads, queries, context length).
    text_model_output, vision_model_output (`BaseModelOutputWithPooling`):
        The towers' own outputs (with their hidden states and attentions when asked).
    """

    loss: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    itm_accuracy: torch.FloatTensor | None = None
    itm_match_rate: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        nested = ("text_model_output", "vision_model_output")
        return tuple(self[key].to_tuple() if key in nested else self[key] for key in self.keys())


@dataclass
class ImageTextRanking(ModelOutput):
    r"""
    indices (`torch.LongTensor` of shape `(num_queries, num_candidates)`):
        Candidates best first: the top k re-ranked by ITM log-odds + ITC cosine, then the rest by ITC.
    scores (`torch.FloatTensor` of shape `(num_queries, num_candidates)`):
        ITC logits of every (query, candidate).
    itm_scores (`torch.FloatTensor` of shape `(num_queries, k)`, *optional*):
        ITM match log-odds of the re-ranked candidates, in the order of `indices[:, :k]`.
    rerank_scores (`torch.FloatTensor` of shape `(num_queries, k)`, *optional*):
        What the top k are sorted by, as BLIP: ITM match log-odds + ITC cosine similarity, in the order of
        `indices[:, :k]`.
    """

    indices: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    itm_scores: torch.FloatTensor | None = None
    rerank_scores: torch.FloatTensor | None = None


@dataclass
class ImageTextFusionOutput(ModelOutput):
    r"""
    itm_logits (`torch.FloatTensor` of shape `(pairs, 2)`):
        ITM logits (no match, match) of each (image, text) pair.
    hidden_states, attentions, cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
        As [`VisionTextCrossAttentionOutput`]'s.
    """

    itm_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


# --- the models ---------------------------------------------------------------------------------------------------


class VisionTextCrossAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    config: VisionTextCrossAttentionConfig
    config_class = VisionTextCrossAttentionConfig
    base_model_prefix = "vision_text_model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VisionTransformerLayer", "CLIPResidualAttentionBlock", "ImageTextFusionLayer"]
    _supports_sdpa = True
    # flash kernels cannot mask padded text keys in image-to-text cross-attention (attention.py refuses it)
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # hard negatives are sampled, pairs depend on the batch

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """Two matched (image, text) pairs, the second text padded, that fit the config."""
        vision, text = self.config.vision_config, self.config.text_config
        height, width = as_pair(vision.image_size)
        generator = torch.Generator().manual_seed(0)
        return {
            "input_ids": torch.randint(1, min(text.vocab_size, 1000), (2, 5), generator=generator),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
            "pixel_values": torch.randn(2, vision.num_channels, height, width, generator=generator),
        }

    def hub_tags(self) -> list[str]:
        return ["image-text-retrieval", "cross-attention", f"fusion-{self.config.fusion_direction.replace('_', '-')}"]

    def model_card(self, repo_id, revision=None, tags=None, license="apache-2.0", training_results=None):
        """The shared card, plus the credit its training data asks for (OpenMoji is CC BY-SA 4.0)."""
        card = super().model_card(repo_id, revision, tags, license, training_results)
        credit = (training_results or {}).get("data_credit")
        return ModelCard(card.content + f"\n## Training data\n\n{credit}\n") if credit else card

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path, text_model_name_or_path, **kwargs):
        """Build the model from a saved (or converted) ViT and a pretrained text encoder (paths, Hub ids or models);
        the projections, fusion and ITM head start from scratch. `vision_*` / `text_*` keywords go to the towers'
        `from_pretrained`, the others to the config (e.g. `projection_dim`, `num_fusion_layers`)."""
        vision_kwargs = {key[7:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("vision_")}
        text_kwargs = {key[5:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("text_")}
        vision_model = _load_tower(VisionTransformerModel, vision_model_name_or_path, vision_kwargs)
        text_model = _load_tower(AutoModel, text_model_name_or_path, text_kwargs)
        config = VisionTextCrossAttentionConfig.from_vision_text_configs(
            vision_model.config, text_model.config, **kwargs
        )
        base = VisionTextCrossAttentionModel(config, vision_model=vision_model, text_model=text_model)
        if cls is VisionTextCrossAttentionModel:
            return base
        model = cls(config)
        model.vision_text_model = base
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VisionTextCrossAttentionModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)


class ImageTextFusion(VisionTextCrossAttentionPreTrainedModel):
    """The fusion layers over (image, text) pairs and the ITM head on the fused first token.

    A sub-model, as BLIP's ITM text encoder: it records its own hidden states and attentions, and the towers theirs,
    so no output capture runs inside another (transformers forbids that chain: the outer capture would take the
    inner one's outputs)."""

    _can_record_outputs = {
        "hidden_states": OutputRecorder(ImageTextFusionLayer, index=0, num_hidden_layers_key="num_fusion_layers"),
        "attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="self_attention"),
        "cross_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="cross_attention"),
    }

    def __init__(self, config: VisionTextCrossAttentionConfig):
        super().__init__(config)
        self.text_queries = config.fusion_direction == "text_to_image"
        context_size = config.vision_config.hidden_size if self.text_queries else config.text_config.hidden_size
        self.layers = nn.ModuleList(ImageTextFusionLayer(config, context_size) for _ in range(config.num_fusion_layers))
        self.layernorm = nn.LayerNorm(config.fusion_hidden_size, eps=config.layer_norm_eps)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, image_tokens, text_tokens, text_mask=None, **kwargs) -> ImageTextFusionOutput:
        """ITM logits (pairs, 2) of (no match, match) for pairs of image tokens and text tokens (same batch)."""
        kwargs = {key: value for key, value in kwargs.items() if key != "output_hidden_states"}  # hooks record them
        implementation = self.config._attn_implementation
        if self.text_queries:
            hidden_states, context = text_tokens, image_tokens
            self_mask = build_attention_mask(
                implementation, text_tokens, key_padding_mask=text_mask, query_padding_mask=text_mask
            )
            cross_mask = None  # every patch is a real key; padded text queries are never read
        else:
            hidden_states, context = image_tokens, text_tokens
            self_mask = None
            cross_mask = build_attention_mask(implementation, image_tokens, text_tokens, key_padding_mask=text_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, context, self_mask, cross_mask, **kwargs)
        return ImageTextFusionOutput(itm_logits=self.itm_head(self.layernorm(hidden_states[:, 0])))


class VisionTextCrossAttentionModel(VisionTextCrossAttentionPreTrainedModel):
    """Vision tower, text tower, ITC projections and the ITM fusion; see the module docstring."""

    def __init__(
        self,
        config: VisionTextCrossAttentionConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        check_text_config(config.text_config)
        self.vision_model = vision_model if vision_model is not None else VisionTransformerModel(config.vision_config)
        self.text_model = text_model if text_model is not None else build_text_model(config.text_config)
        # the towers read the composite's sub-configs, so per-tower attn_implementation settings reach them
        self.vision_model.config = config.vision_config
        self.text_model.config = config.text_config
        self.own_text_tower = is_clip_text_config(config.text_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.fusion = ImageTextFusion(config)
        self.post_init()

    # the towers, each run once per forward -------------------------------------------------------------------------

    def encode_images(self, pixel_values, interpolate_pos_encoding=None, **kwargs) -> BaseModelOutputWithPooling:
        """The vision tower's output with `pooler_output` replaced by the projected (not normalised) embedding."""
        check_pixel_values(pixel_values, self.config.vision_config.num_channels)
        outputs = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        return _replace_pooled(outputs, self.visual_projection(outputs.pooler_output))

    def encode_texts(
        self, input_ids, attention_mask=None, position_ids=None, token_type_ids=None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The text tower's output with `pooler_output` replaced by the projected (not normalised) embedding."""
        if input_ids is None:
            raise ValueError("input_ids is required: a (batch, length) tensor of token ids from the tokenizer.")
        check_input_ids(input_ids, self.config.text_config.vocab_size)
        if attention_mask is not None:
            attention_mask = validate_padding_mask(attention_mask, *input_ids.shape, "attention_mask").long()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.text_model(**inputs, **kwargs)
        if self.own_text_tower:
            pooled = outputs.pooler_output
        else:  # mean over the real tokens, as sentence encoders (MiniLM) are trained; all padding pools to zeros
            keeps = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            keeps = keeps[..., None].to(outputs.last_hidden_state.dtype)
            pooled = (outputs.last_hidden_state * keeps).sum(1) / keeps.sum(1).clamp(min=1)
        return _replace_pooled(outputs, self.text_projection(pooled))

    @can_return_tuple
    def get_image_features(
        self, pixel_values=None, interpolate_pos_encoding=None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """`pooler_output` is the projected image embedding (not normalised), as transformers 5's CLIP;
        `return_dict=False` gives the same values as a tuple."""
        return self.encode_images(pixel_values, interpolate_pos_encoding, **resolve_forward_kwargs(self, kwargs))

    @can_return_tuple
    def get_text_features(
        self, input_ids=None, attention_mask=None, position_ids=None, token_type_ids=None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:  # fmt: skip
        """`pooler_output` is the projected text embedding (not normalised), as transformers 5's CLIP;
        `return_dict=False` gives the same values as a tuple."""
        kwargs = resolve_forward_kwargs(self, kwargs)
        return self.encode_texts(input_ids, attention_mask, position_ids, token_type_ids, **kwargs)

    # scoring -------------------------------------------------------------------------------------------------------

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """ITC logits (images, texts) of normalised embeddings; the temperature is clamped at exp(-max_logit_scale)."""
        return self.logit_scale_value() * image_embeds.float() @ text_embeds.float().T

    def logit_scale_value(self) -> torch.Tensor:
        """The ITC inverse temperature, exp(logit_scale) clamped at exp(max_logit_scale)."""
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp()

    def match(self, image_tokens, text_tokens, text_mask=None, **kwargs) -> torch.Tensor:
        """ITM logits (pairs, 2) for image i with text i; one image (or one text) is broadcast to all the others."""
        return self.fuse(image_tokens, text_tokens, text_mask, **kwargs).itm_logits

    def fuse(self, image_tokens, text_tokens, text_mask=None, **kwargs) -> ImageTextFusionOutput:
        """The fusion's output (ITM logits, and its hidden states and attentions when asked) for image i with text i;
        one image (or one text) is broadcast to all the others."""
        num_images, num_texts = image_tokens.shape[0], text_tokens.shape[0]
        if num_images != num_texts and 1 not in (num_images, num_texts):
            raise ValueError(
                f"Image-text matching scores pairs: got {num_images} images and {num_texts} texts. Pass as many "
                "images as texts (image i with text i), or one image (or one text) to score against all the others."
            )
        pairs = max(num_images, num_texts)
        image_tokens = image_tokens.expand(pairs, -1, -1)
        text_tokens = text_tokens.expand(pairs, -1, -1)
        if text_mask is not None:
            text_mask = text_mask.expand(pairs, -1)
        return self.fusion(image_tokens, text_tokens, text_mask, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VisionTextCrossAttentionOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_texts, length)`):
            Token ids of the texts, from the tokenizer.
        attention_mask (`torch.Tensor` of shape `(num_texts, length)`, *optional*):
            1 for tokens to keep, 0 for padding. A text that is all padding gets a zero embedding (ITC logits 0).
        pixel_values (`torch.FloatTensor` of shape `(num_images, channels, height, width)`):
            Images from `ViTImageProcessor`.
        position_ids, token_type_ids (`torch.LongTensor` of shape `(num_texts, length)`, *optional*):
            Passed to the text tower.
        return_loss (`bool`, *optional*):
            Return the ITC loss of matched pairs (image i with text i); needs as many images as texts.
        interpolate_pos_encoding (`bool`, *optional*):
            Run the vision tower on images of another size than `vision_config.image_size`.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        vision_outputs = self.encode_images(pixel_values, interpolate_pos_encoding, **kwargs)
        text_outputs = self.encode_texts(input_ids, attention_mask, position_ids, token_type_ids, **kwargs)
        image_embeds = normalize_embeddings(vision_outputs.pooler_output)
        text_embeds = normalize_embeddings(text_outputs.pooler_output)
        logits_per_image = self.similarity(image_embeds, text_embeds)
        num_images, num_texts = logits_per_image.shape
        fused = ImageTextFusionOutput()
        if num_images == num_texts or 1 in (num_images, num_texts):
            image_tokens, text_tokens = vision_outputs.last_hidden_state, text_outputs.last_hidden_state
            fused = self.fuse(image_tokens, text_tokens, attention_mask, **kwargs)
        loss = contrastive_loss(logits_per_image) if return_loss else None
        return VisionTextCrossAttentionOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            itm_logits=fused.itm_logits,
            hidden_states=fused.hidden_states,
            attentions=fused.attentions,
            cross_attentions=fused.cross_attentions,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            itc_loss=loss,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


def _load_tower(loader, name_or_path, kwargs) -> PreTrainedModel:
    if isinstance(name_or_path, PreTrainedModel):
        return name_or_path
    tower = loader.from_pretrained(name_or_path, **kwargs)
    if isinstance(tower, PreTrainedModel) and hasattr(tower, tower.base_model_prefix or "-"):
        tower = getattr(tower, tower.base_model_prefix)  # a ViT classifier: keep its encoder
    return tower


def is_clip_text_config(text_config) -> bool:
    """Whether the text tower is our CLIP text model (which pools itself) rather than any transformers encoder."""
    # by model_type, not isinstance: under trust_remote_code the config class may come from another copy of the file
    return text_config.model_type == CLIPResidualTextConfig.model_type


def build_text_model(text_config) -> PreTrainedModel:
    if is_clip_text_config(text_config):
        return CLIPResidualTextModel(text_config)
    return AutoModel.from_config(text_config)


def _replace_pooled(outputs, pooled: torch.Tensor) -> BaseModelOutputWithPooling:
    return BaseModelOutputWithPooling(
        last_hidden_state=outputs.last_hidden_state,
        pooler_output=pooled,
        hidden_states=outputs.hidden_states,
        attentions=outputs.attentions,
    )


class VisionTextCrossAttentionForImageTextRetrieval(VisionTextCrossAttentionPreTrainedModel):
    """ITC + ITM with in-batch hard negatives (so Trainer fine-tunes it), and `rank` (ITC, then ITM on the top k).

    Hard negatives as ALBEF: for each image one negative text drawn with probability softmax(ITC logits) over the
    other texts of the batch, and for each text one negative image likewise (the most similar one in eval mode, so
    the evaluation loss is deterministic). ITM is then trained on the positives and the 2 x batch negatives.
    """

    def __init__(self, config: VisionTextCrossAttentionConfig):
        super().__init__(config)
        self.vision_text_model = VisionTextCrossAttentionModel(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VisionTextCrossAttentionOutput:
        r"""
        Arguments as [`VisionTextCrossAttentionModel.forward`]; `return_loss=True` (which the training collator sets)
        returns loss = ITC + `itm_loss_weight` * ITM over matched pairs (image i with text i); with
        `itm_loss_weight=0` (a dual encoder) the loss is ITC alone and the hard negatives are not scored.
        """
        outputs = self.vision_text_model(
            input_ids, attention_mask, pixel_values, position_ids, token_type_ids, return_loss,
            interpolate_pos_encoding,
            **kwargs,
        )  # fmt: skip
        if not return_loss:
            return outputs
        if self.config.itm_loss_weight == 0:  # a dual encoder: ITC alone, no hard negatives to score
            return outputs
        logits, labels = self.matching_pairs(outputs, attention_mask)
        outputs.itm_loss = nn.functional.cross_entropy(logits, labels)
        outputs.loss = outputs.itc_loss + self.config.itm_loss_weight * outputs.itm_loss
        with torch.no_grad():
            predictions = logits.argmax(dim=-1)
            outputs.itm_accuracy = (predictions == labels).float().mean()
            outputs.itm_match_rate = predictions.float().mean()
        return outputs

    def matching_pairs(self, outputs: VisionTextCrossAttentionOutput, attention_mask) -> tuple[torch.Tensor, ...]:
        """ITM logits (float32) and labels of the positive pairs and one hard negative text per image and image per
        text, the pairs the ITM loss is the cross-entropy of."""
        image_tokens = outputs.vision_model_output.last_hidden_state
        text_tokens = outputs.text_model_output.last_hidden_state
        batch_size = image_tokens.shape[0]
        positives = outputs.itm_logits
        if batch_size < 2:  # no other pair to draw a negative from: the positives alone
            return positives.float(), torch.ones(batch_size, dtype=torch.long, device=positives.device)
        negative_texts = self._hard_negatives(outputs.logits_per_image)
        negative_images = self._hard_negatives(outputs.logits_per_text)
        text_mask = None if attention_mask is None else attention_mask.bool()
        negatives = self.vision_text_model.match(
            torch.cat((image_tokens, image_tokens[negative_images])),
            torch.cat((text_tokens[negative_texts], text_tokens)),
            None if text_mask is None else torch.cat((text_mask[negative_texts], text_mask)),
        )
        logits = torch.cat((positives, negatives)).float()
        labels = torch.cat((torch.ones(batch_size), torch.zeros(2 * batch_size))).long().to(logits.device)
        return logits, labels

    def _hard_negatives(self, logits: torch.Tensor) -> torch.Tensor:
        """For each row, a column other than its own, drawn by softmax of the logits (the highest in eval mode)."""
        with torch.no_grad():
            weights = torch.softmax(logits.float(), dim=-1)
            weights.fill_diagonal_(0.0)
            weights = weights + (weights.sum(-1, keepdim=True) == 0) * (
                1 - torch.eye(len(weights), device=weights.device)
            )
            if self.training:
                return torch.multinomial(weights, 1).squeeze(-1)
            return weights.argmax(dim=-1)

    @torch.no_grad()
    def rank(
        self,
        *,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query: str = "image",
        top_k: int | None = None,
        batch_size: int = 256,
    ) -> ImageTextRanking:
        """Rank texts for each image (`query="image"`) or images for each text (`query="text"`): every candidate by
        ITC, then the top k (`config.rerank_top_k` by default; 0 for ITC alone) re-ranked by ITM's match log-odds
        plus the ITC cosine similarity, as BLIP. `batch_size`: images (texts) per tower pass."""
        if query not in ("image", "text"):
            raise ValueError(f"`query` must be 'image' or 'text', got {query!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"`batch_size` must be a positive int (images or texts per tower pass), got {batch_size!r}."
            )
        model = self.vision_text_model
        images = _batched(
            lambda start: model.encode_images(pixel_values[start : start + batch_size]), len(pixel_values), batch_size
        )
        texts = _batched(
            lambda start: model.encode_texts(
                input_ids[start : start + batch_size],
                None if attention_mask is None else attention_mask[start : start + batch_size],
            ),
            len(input_ids),
            batch_size,
        )  # fmt: skip
        image_embeds = normalize_embeddings(images.pooler_output)
        text_embeds = normalize_embeddings(texts.pooler_output)
        scores = model.similarity(image_embeds, text_embeds)
        if query == "text":
            scores = scores.T
        text_mask = None if attention_mask is None else attention_mask.bool()
        return self.rerank(scores, images.last_hidden_state, texts.last_hidden_state, text_mask, query, top_k)

    @torch.no_grad()
    def rerank(self, scores, image_tokens, text_tokens, text_mask=None, query="image", top_k=None) -> ImageTextRanking:
        """Re-rank the top k of precomputed ITC `scores` (queries, candidates) by ITM log-odds + ITC cosine (BLIP's
        sum), from the towers' token states."""
        top_k = self.config.rerank_top_k if top_k is None else top_k
        if top_k < 0:
            raise ValueError(f"`top_k` must be >= 0, got {top_k}.")
        order = scores.argsort(dim=-1, descending=True)
        top_k = min(top_k, scores.shape[1])
        if top_k == 0:
            return ImageTextRanking(indices=order, scores=scores)
        candidates = order[:, :top_k]
        queries = torch.arange(scores.shape[0], device=scores.device)[:, None].expand(-1, top_k).reshape(-1)
        image_index, text_index = (
            (queries, candidates.reshape(-1)) if query == "image" else (candidates.reshape(-1), queries)
        )
        logits = self.vision_text_model.match(
            image_tokens[image_index], text_tokens[text_index], None if text_mask is None else text_mask[text_index]
        )
        itm_scores = (logits[:, 1] - logits[:, 0]).float().reshape(-1, top_k)
        cosine = scores.gather(1, candidates) / self.vision_text_model.logit_scale_value()
        rerank_scores, reorder = (itm_scores + cosine).sort(dim=-1, descending=True)
        indices = torch.cat((candidates.gather(1, reorder), order[:, top_k:]), dim=1)
        return ImageTextRanking(
            indices=indices, scores=scores, itm_scores=itm_scores.gather(1, reorder), rerank_scores=rerank_scores
        )


def _batched(encode, total: int, batch_size: int) -> BaseModelOutputWithPooling:
    parts = [encode(start) for start in range(0, total, batch_size)]
    return BaseModelOutputWithPooling(
        last_hidden_state=torch.cat([part.last_hidden_state for part in parts]),
        pooler_output=torch.cat([part.pooler_output for part in parts]),
    )


__all__ = [
    "ImageTextFusion",
    "ImageTextFusionLayer",
    "ImageTextFusionOutput",
    "ImageTextRanking",
    "VisionTextCrossAttentionForImageTextRetrieval",
    "VisionTextCrossAttentionModel",
    "VisionTextCrossAttentionOutput",
    "VisionTextCrossAttentionPreTrainedModel",
]

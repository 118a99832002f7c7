"""`TransformerConfig`: every hyperparameter of the model in one frozen record.

The defaults are the paper's base model (Vaswani et al., 2017, Table 3):
N = 6 layers, d_model = 512, d_ff = 2048, h = 8 heads, P_drop = 0.1,
eps_ls = 0.1, 4000 warm-up steps, a shared 37,000-token vocabulary with the
embeddings tied to the pre-softmax projection (section 3.4).
"""

import dataclasses
import json
from typing import Any

from keras_transformer.checks import check_fields

ACTIVATIONS = ("relu", "gelu", "swish")
# Feature orders of the sinusoidal table (`layers.positional`).
POSITIONAL_LAYOUTS = ("interleaved", "split")
# Learning-rate schedules (`training.schedule`): the paper's eq. 3, or a
# linear warm-up and a linear decay to zero over the steps a run plans.
SCHEDULES = ("paper", "linear")
# What a run is for: it picks the metrics (BLEU/chrF or ROUGE) and the
# default search settings (`inference.SearchSettings.for_config`).
TASKS = ("translation", "summarization")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of an encoder-decoder Transformer.

    A config never changes after creation; derive a new one with
    `dataclasses.replace(config, field=value)`. Every field is validated in
    `__post_init__`.

    Args:
        source_vocab_size: int, size of the source vocabulary (pad id 0).
        target_vocab_size: int, size of the target vocabulary (pad id 0).
        num_layers: int, N, the number of encoder layers and of decoder
            layers. Defaults to 6.
        d_model: int, width of every sub-layer output. Defaults to 512.
        num_heads: int, h, attention heads; must divide `d_model`.
        d_ff: int, inner width of the feed-forward network. Defaults to 2048.
        dropout_rate: float, P_drop, applied to each sub-layer output and to
            the sums of embeddings and positional encodings. Defaults to 0.1.
        attention_dropout_rate: float, dropout on attention weights. The
            paper uses none; defaults to 0.0.
        label_smoothing: float, eps_ls of section 5.4. Defaults to 0.1.
        warmup_steps: int, warm-up of the learning-rate schedule (eq. 3).
        schedule: str, the learning-rate schedule: "paper" (the default:
            eq. 3, warm-up then inverse square-root decay, made for 100,000
            steps) or "linear" (linear warm-up to `learning_rate`, then a
            linear decay to zero at the last step the run plans: for short
            runs whose length is known; `training.LinearDecaySchedule`).
        learning_rate: float or None, the peak learning rate; None (the
            default) is the paper's peak, (d_model * warmup_steps)^-0.5.
        max_length: int, the longest sequence (source or target, special
            tokens included) the positional encoding covers. Defaults to 256.
        max_source_length: int or None, the longest source (with [END])
            trained on and read at inference (longer ones are truncated or
            dropped); None means `max_length`. At most `max_length`.
        max_target_length: int or None, the longest target (with [START]
            or [END]) trained on and generated; None means `max_length`.
            At most `max_length`.
        task: str, "translation" (the default) or "summarization": the
            metrics a run reports and its default search settings.
        share_embeddings: bool, one embedding matrix for source and target
            (section 3.4); needs equal vocabulary sizes. Defaults to True.
        tie_output_projection: bool, use the target embedding matrix as the
            pre-softmax projection (section 3.4). Defaults to True.
        norm_first: bool, pre-norm residual blocks instead of the paper's
            post-norm `LayerNorm(x + Sublayer(x))`. Defaults to False.
        activation: str, the feed-forward network's activation: "relu"
            (the paper and the default), "gelu" or "swish" (SiLU,
            x * sigmoid(x): Hugging Face's "swish"/"silu", which imported
            Marian / OPUS-MT models use).
        layer_norm_epsilon: float, epsilon of every LayerNorm.
        copy_attention: bool, a pointer-generator output (See et al., 2017,
            section 2.2; `layers.PointerGenerator`): each target token is
            generated from the vocabulary or copied from the source through
            the last decoder layer's cross-attention, and the model outputs
            log P of that mixture instead of logits. Copying needs one
            joint vocabulary (every source id is a target id):
            `share_embeddings=True` and equal vocabulary sizes. Not in the
            paper, which only generates; defaults to False.
        previous_source_token: bool, each source position's input also
            carries a learned linear map of the previous position's
            embedding (`layers.PreviousTokenProjection`), so that copy
            attention, having copied x_i, finds x_{i+1} in one attention
            instead of garbling a many-piece name. Not in the paper;
            defaults to False (on in the "summarization" preset).
        positional_layout: str, the feature order of the sinusoidal
            positional encoding (section 3.5), with angles
            a(pos, i) = pos / 10000^(2i / d_model): "interleaved" (the
            paper and the default: PE(pos, 2i) = sin(a),
            PE(pos, 2i + 1) = cos(a)) or "split" (the first d_model / 2
            features sin(a), the last d_model / 2 cos(a): the table of
            Hugging Face's Marian models, for imported Marian / OPUS-MT
            checkpoints).
        scale_embeddings: bool, multiply the source and target embeddings
            by sqrt(d_model) (section 3.4). Defaults to True (the paper);
            False for imported Marian models whose config has
            `scale_embedding=False`.
        output_bias: bool, add a bias (V_target,) to the logits
            (`layers.OutputBias`), tied projection or not. The paper's
            tied projection has none; the bias is a non-trainable weight,
            zeros until set: it holds Hugging Face Marian's
            `final_logits_bias` buffer (not trained there either) for
            imported models. Defaults to False.
        suppress_reserved: bool, the searches never produce [PAD] (id 0)
            or [START] (id 2): `Transformer.decode_step` sets their float32
            logits to -1e9, so every search (Keras greedy and beam, the
            SavedModel, ONNX, CTranslate2) renormalizes over the other
            tokens. For imported Marian models, whose pad row serves as
            both ids and which ban it in generation (`bad_words_ids`).
            The teacher-forced output of `model(...)`, and so training and
            the loss, are unchanged. With `copy_attention` the step's
            log P is suppressed the same way. Defaults to False (the
            paper suppresses nothing).
    """

    source_vocab_size: int = 37000
    target_vocab_size: int = 37000
    num_layers: int = 6
    d_model: int = 512
    num_heads: int = 8
    d_ff: int = 2048
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    label_smoothing: float = 0.1
    warmup_steps: int = 4000
    schedule: str = "paper"
    learning_rate: float | None = None
    max_length: int = 256
    share_embeddings: bool = True
    tie_output_projection: bool = True
    norm_first: bool = False
    activation: str = "relu"
    layer_norm_epsilon: float = 1e-6
    max_source_length: int | None = None
    max_target_length: int | None = None
    task: str = "translation"
    copy_attention: bool = False
    previous_source_token: bool = False
    positional_layout: str = "interleaved"
    scale_embeddings: bool = True
    output_bias: bool = False
    suppress_reserved: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int | None, float | None):
                if value is None:
                    continue
                expected = int if field.type == int | None else float
            else:
                expected = {"int": int, "float": float, "bool": bool,
                            "str": str}[field.type.__name__]
            if expected is float and isinstance(value, int) and not (
                isinstance(value, bool)
            ):
                object.__setattr__(self, field.name, float(value))
                continue
            if not isinstance(value, expected) or (
                expected is int and isinstance(value, bool)
            ):
                raise TypeError(
                    f"`{field.name}` must be of type {expected.__name__}. "
                    f"Received: {field.name}={value!r}"
                )
        for name in ("source_vocab_size", "target_vocab_size", "num_layers",
                     "d_model", "num_heads", "d_ff", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. "
                    f"Received: {name}={getattr(self, name)}"
                )
        if self.source_vocab_size < 5 or self.target_vocab_size < 5:
            raise ValueError(
                "`source_vocab_size` and `target_vocab_size` must hold at "
                "least the 4 reserved tokens and one more. Received: "
                f"source_vocab_size={self.source_vocab_size}, "
                f"target_vocab_size={self.target_vocab_size}"
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                "`d_model` must be divisible by `num_heads`. Received: "
                f"d_model={self.d_model}, num_heads={self.num_heads}"
            )
        for name in ("dropout_rate", "attention_dropout_rate",
                     "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"`{name}` must be in [0, 1). Received: {name}={value}"
                )
        if self.max_length < 2:
            raise ValueError(
                "`max_length` must be at least 2. "
                f"Received: max_length={self.max_length}"
            )
        for name in ("max_source_length", "max_target_length"):
            value = getattr(self, name)
            if value is not None and not 2 <= value <= self.max_length:
                raise ValueError(
                    f"`{name}` must be in [2, max_length={self.max_length}]"
                    f" or None. Received: {name}={value}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {SCHEDULES}. "
                f"Received: schedule={self.schedule!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be positive or None. "
                f"Received: learning_rate={self.learning_rate}")
        if self.task not in TASKS:
            raise ValueError(
                f"`task` must be one of {TASKS}. Received: task={self.task!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {ACTIVATIONS}. "
                f"Received: activation={self.activation!r}"
            )
        if self.positional_layout not in POSITIONAL_LAYOUTS:
            raise ValueError(
                f"`positional_layout` must be one of {POSITIONAL_LAYOUTS}. "
                f"Received: positional_layout={self.positional_layout!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(
                "`layer_norm_epsilon` must be positive. "
                f"Received: layer_norm_epsilon={self.layer_norm_epsilon}"
            )
        if self.copy_attention and not (
            self.share_embeddings
            and self.source_vocab_size == self.target_vocab_size
        ):
            raise ValueError(
                "`copy_attention=True` needs one joint vocabulary, in which "
                "every source token id is a target token id: "
                "`share_embeddings=True` and `source_vocab_size` equal to "
                "`target_vocab_size`. Received: copy_attention=True, "
                f"share_embeddings={self.share_embeddings}, "
                f"source_vocab_size={self.source_vocab_size}, "
                f"target_vocab_size={self.target_vocab_size}"
            )
        if self.share_embeddings and (
            self.source_vocab_size != self.target_vocab_size
        ):
            raise ValueError(
                "`share_embeddings=True` needs one joint vocabulary: "
                "`source_vocab_size` must equal `target_vocab_size`. "
                f"Received: source_vocab_size={self.source_vocab_size}, "
                f"target_vocab_size={self.target_vocab_size}"
            )

    @property
    def source_length(self) -> int:
        """The longest source, [END] included (`max_source_length`)."""
        return self.max_source_length or self.max_length

    @property
    def target_length(self) -> int:
        """The longest target, [START]/[END] included (`max_target_length`).
        """
        return self.max_target_length or self.max_length

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TransformerConfig":
        """Returns the preset `name`, with `overrides` replacing fields."""
        if name not in PRESETS:
            raise ValueError(
                f"Unknown `name` for a preset; known presets: "
                f"{sorted(PRESETS)}. Received: name={name!r}"
            )
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TransformerConfig":
        """Builds a config from `to_dict()` output; unknown keys are errors."""
        check_fields("config fields", values,
                     (field.name for field in dataclasses.fields(cls)))
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TransformerConfig":
        return cls.from_dict(json.loads(text))


# "base" and "big" are the rows of the paper's Table 3; "tiny" and "small"
# train in seconds to minutes on a laptop CPU; "summarization" is "small"
# with long sources and copy attention.
PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(
        source_vocab_size=8000, target_vocab_size=8000, num_layers=2,
        d_model=64, num_heads=4, d_ff=256, warmup_steps=400,
        max_length=128, share_embeddings=False,
    ),
    "small": TransformerConfig(
        source_vocab_size=8000, target_vocab_size=8000, num_layers=3,
        d_model=256, num_heads=4, d_ff=1024, warmup_steps=1000,
        max_length=256, share_embeddings=False,
    ),
    # "small" for documents: sources up to 1,024 tokens, summaries up to
    # 128, one shared vocabulary (source and target are one language),
    # which lets a summary copy the document's rare words and names (See
    # et al., 2017).
    "summarization": TransformerConfig(
        source_vocab_size=8000, target_vocab_size=8000, num_layers=3,
        d_model=256, num_heads=4, d_ff=1024, warmup_steps=1000,
        max_length=1024, max_source_length=1024, max_target_length=128,
        task="summarization", copy_attention=True,
        previous_source_token=True,
    ),
    "base": TransformerConfig(),
    "big": TransformerConfig(
        d_model=1024, num_heads=16, d_ff=4096, dropout_rate=0.3,
    ),
}

"""The built-in architectures: simple-linear, mlp, cnn, transformer-encoder."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from app.architectures.spec import Architecture, InputSpec


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- simple-linear: the classic save/load tutorial's model, attribute names and all ---------------------


class SimpleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)  # type: ignore[no-any-return]


class SimpleLinearConfig(_Config):
    pass


SIMPLE_LINEAR = Architecture(
    name="simple-linear",
    description="nn.Linear(10, 1) as attribute `linear`: the PyTorch save/load tutorial's SimpleModel.",
    config_model=SimpleLinearConfig,
    factory=lambda _config: SimpleModel(),
    input_specs=lambda _config: [InputSpec("x", ("batch", 10))],
    module_classes=(SimpleModel,),
)


# --- mlp -------------------------------------------------------------------------------------------------

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPConfig(_Config):
    in_features: int = Field(default=784, ge=1, le=1_000_000)
    hidden_sizes: list[int] = Field(default=[128, 64], max_length=64)
    out_features: int = Field(default=10, ge=1, le=1_000_000)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _positive_hidden(self) -> MLPConfig:
        if any(size < 1 or size > 1_000_000 for size in self.hidden_sizes):
            raise ValueError("hidden_sizes entries must be between 1 and 1000000")
        return self


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.in_features
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[config.activation]()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, config.out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


MLP_ARCH = Architecture(
    name="mlp",
    description="A multi-layer perceptron: Linear layers with an activation between them (`layers.N.*`).",
    config_model=MLPConfig,
    factory=lambda config: MLP(config),
    input_specs=lambda config: [InputSpec("x", ("batch", config.in_features))],
    module_classes=(MLP,),
)


# --- cnn -------------------------------------------------------------------------------------------------


class CNNConfig(_Config):
    in_channels: int = Field(default=1, ge=1, le=64)
    image_size: int = Field(default=28, ge=4, le=1024)
    channels: list[int] = Field(default=[16, 32], min_length=1, max_length=8)
    num_classes: int = Field(default=10, ge=1, le=100_000)
    batch_norm: bool = True

    @model_validator(mode="after")
    def _fits(self) -> CNNConfig:
        if self.image_size // (2 ** len(self.channels)) < 1:
            raise ValueError("image_size is too small for that many pooling stages")
        if any(c < 1 or c > 4096 for c in self.channels):
            raise ValueError("channels entries must be between 1 and 4096")
        return self


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.in_channels
        for out in config.channels:
            layers.append(nn.Conv2d(width, out, kernel_size=3, padding=1))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        side = config.image_size // (2 ** len(config.channels))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


CNN_ARCH = Architecture(
    name="cnn",
    description="A small image classifier: Conv2d(+BatchNorm)/ReLU/MaxPool stages, then a Linear head.",
    config_model=CNNConfig,
    factory=lambda config: CNN(config),
    input_specs=lambda config: [
        InputSpec("images", ("batch", config.in_channels, config.image_size, config.image_size))
    ],
    module_classes=(CNN,),
)


# --- transformer-encoder ---------------------------------------------------------------------------------


class TransformerEncoderConfig(_Config):
    vocab_size: int = Field(default=1000, ge=2, le=1_000_000)
    d_model: int = Field(default=64, ge=2, le=16_384)
    nhead: int = Field(default=4, ge=1, le=256)
    num_layers: int = Field(default=2, ge=1, le=128)
    dim_feedforward: int = Field(default=128, ge=1, le=65_536)
    max_len: int = Field(default=128, ge=1, le=65_536)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    tie_weights: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerEncoderConfig:
        if self.d_model % self.nhead:
            raise ValueError("d_model must be divisible by nhead")
        return self


class TransformerEncoderLM(nn.Module):
    """Token + learned position embeddings, a TransformerEncoder, and an LM head tied to the embedding."""

    def __init__(self, config: TransformerEncoderConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.nhead, config.dim_feedforward, config.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        hidden = self.token_embedding(tokens) + self.position_embedding(positions)
        return self.lm_head(self.norm(self.encoder(hidden)))  # type: ignore[no-any-return]


TRANSFORMER_ENCODER = Architecture(
    name="transformer-encoder",
    description="A small Transformer encoder language model; the LM head shares the token embedding's weight.",
    config_model=TransformerEncoderConfig,
    factory=lambda config: TransformerEncoderLM(config),
    input_specs=lambda config: [
        InputSpec(
            "tokens",
            ("batch", "seq"),
            dtype="int64",
            high=config.vocab_size,
            example_dims={"seq": min(16, config.max_len)},
        )
    ],
    module_classes=(TransformerEncoderLM,),
)

ARCHITECTURES: list[Architecture] = [SIMPLE_LINEAR, MLP_ARCH, CNN_ARCH, TRANSFORMER_ENCODER]

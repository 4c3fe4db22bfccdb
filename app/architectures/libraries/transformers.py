"""Hugging Face ``transformers``: everything weightvault knows about it lives here.

A registration is the dict ``save_pretrained`` writes to ``config.json``. The model class is
``config["architectures"][0]`` and must be one the installed ``transformers`` exports; the config object
is built by that class's own ``config_class`` from the dict. Nothing is fetched from a hub and no code
from anywhere else runs: a config naming remote code (``auto_map``) is refused, ``trust_remote_code``
never appears.

``transformers`` is optional (``pip install 'weightvault[transformers]'``): it is imported only when a
registration of this library is checked or built.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from app.architectures.libraries import Recipe, find_key
from app.architectures.spec import InputSpec
from app.errors import InvalidArchitecture

INSTALL_HINT = "install the extra on the server: pip install 'weightvault[transformers]'"
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")
# Module objects (not tensors) are built even on the meta device: a config with a million layers would
# take minutes and gigabytes before its parameters could be counted.
MAX_LAYERS = 1024
_LAYER_KEY = re.compile(r"(^|_)(n_)?layers?$|^num_.*layers$|^n_layer$")
# Sequence length used for the example inputs (at most the model's maximum).
EXAMPLE_SEQUENCE = 8


class TransformersLibrary:
    def require(self) -> None:
        try:
            found = importlib.util.find_spec("transformers")
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise _not_installed()

    def check(self, recipe: Recipe) -> None:
        _require_installed()
        config = _config_dict(recipe)
        if recipe.factory is not None or recipe.kwargs:
            raise InvalidArchitecture(
                "A transformers architecture is described by its config alone (the dict in config.json); "
                "leave out factory and kwargs.",
                {"library": "transformers"},
            )
        where = find_key(config, "auto_map")
        if where is not None:
            raise InvalidArchitecture(
                f"The config names remote code ('{where}'); weightvault never runs code from a model "
                "repository. Register a model class that transformers itself exports.",
                {"key": where},
            )
        check_layers(config)
        cls = model_class(config)
        config_object(cls, config)

    def build(self, recipe: Recipe, input_names: Sequence[str]) -> nn.Module:
        config = _config_dict(recipe)
        cls = model_class(config)
        built = positional_class(cls, tuple(input_names)) if input_names else cls
        module: nn.Module = built(config_object(cls, config))
        return module

    def derive_inputs(self, recipe: Recipe, module: nn.Module) -> list[InputSpec] | None:
        config = _config_dict(recipe)
        cls = model_class(config)
        hf_config = config_object(cls, config)
        accepted = forward_parameters(cls)
        if "input_ids" in accepted:
            vocab = getattr(hf_config, "vocab_size", None)
            if not isinstance(vocab, int):
                return None
            specs = [_token_input("input_ids", hf_config, high=vocab)]
            if "attention_mask" in accepted:
                specs.append(_token_input("attention_mask", hf_config, high=2, low=1))
            type_vocab = getattr(hf_config, "type_vocab_size", None)
            if "token_type_ids" in accepted and isinstance(type_vocab, int) and type_vocab > 0:
                specs.append(_token_input("token_type_ids", hf_config, high=type_vocab))
            return specs
        if "pixel_values" in accepted:
            size = getattr(hf_config, "image_size", None)
            channels = getattr(hf_config, "num_channels", 3)
            height, width = (size, size) if isinstance(size, int) else tuple(size or (None, None))[:2]
            if not (isinstance(height, int) and isinstance(width, int) and isinstance(channels, int)):
                return None
            return [InputSpec("pixel_values", ("batch", channels, height, width))]
        return None

    def fit_inputs(self, recipe: Recipe, module: nn.Module, declared: Sequence[InputSpec]) -> list[InputSpec]:
        config = _config_dict(recipe)
        cls = model_class(config)
        hf_config = config_object(cls, config)
        accepted = forward_parameters(cls)
        unknown = [spec.name for spec in declared if spec.name not in accepted]
        if unknown:
            raise InvalidArchitecture(
                f"{cls.__name__}.forward takes no argument '{unknown[0]}'; declare inputs among "
                f"{', '.join(accepted)}.",
                {"unknown_inputs": unknown, "forward_arguments": accepted},
            )
        fitted = []
        for spec in declared:
            if spec.name == "input_ids" and isinstance(getattr(hf_config, "vocab_size", None), int):
                spec = InputSpec(spec.name, spec.shape, spec.dtype, high=hf_config.vocab_size)
            elif spec.name == "attention_mask":
                spec = InputSpec(spec.name, spec.shape, spec.dtype, high=2, low=1)
            fitted.append(spec)
        return fitted

    def describe(self, recipe: Recipe) -> str:
        config = _config_dict(recipe)
        return f"transformers {config['architectures'][0]} ({config.get('model_type', 'config')})"

    def prepare_export(self, module: nn.Module) -> dict[str, Any]:
        config: Any = getattr(module, "config", None)
        if config is None:
            return {}
        # A KV cache is a Cache object, not a tensor: no exporter can return it, and an ONNX consumer runs
        # the whole prompt anyway. Both the config and the argument, as models read one or the other.
        config.use_cache = False
        # A ModelOutput names its fields (last_hidden_state, logits, ...); those become the graph's outputs.
        config.return_dict = True
        accepts = inspect.signature(module.forward).parameters
        return {
            name: value for name, value in (("use_cache", False), ("return_dict", True)) if name in accepts
        }


def _require_installed() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise _not_installed() from None


def _not_installed() -> InvalidArchitecture:
    return InvalidArchitecture(
        f"This server cannot register transformers architectures: {INSTALL_HINT}.",
        {"library": "transformers", "installed": False},
    )


def _config_dict(recipe: Recipe) -> dict[str, Any]:
    config = recipe.config
    if not isinstance(config, dict) or not config:
        raise InvalidArchitecture(
            "A transformers architecture needs `config`: the dict save_pretrained writes to config.json.",
            {"library": "transformers"},
        )
    names = config.get("architectures")
    if not (isinstance(names, list) and names and isinstance(names[0], str)):
        raise InvalidArchitecture(
            'The config has no `architectures` list naming the model class (e.g. ["BertModel"]); '
            "add it, as save_pretrained does.",
            {"key": "architectures"},
        )
    return config


def check_layers(config: Mapping[str, Any], path: str = "") -> None:
    for key, value in config.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            check_layers(value, where)
        elif _LAYER_KEY.search(str(key)) and isinstance(value, int) and value > MAX_LAYERS:
            raise InvalidArchitecture(
                f"The config asks for {value} layers ('{where}'); at most {MAX_LAYERS} are accepted.",
                {"key": where, "value": value, "limit": MAX_LAYERS},
            )


def model_class(config: Mapping[str, Any]) -> type[nn.Module]:
    """The transformers model class ``config["architectures"][0]`` names, or ``InvalidArchitecture``."""
    _require_installed()
    name = config["architectures"][0]
    cls = _exported(name) if _CLASS_NAME.fullmatch(name) else None
    if cls is None:
        import transformers

        raise InvalidArchitecture(
            f"'{name[:100]}' is not a model class that the installed transformers "
            f"({transformers.__version__}) exports; architectures[0] must name one, e.g. BertModel.",
            {"class": name[:100], "transformers": transformers.__version__},
        )
    return cls


@functools.cache
def _exported(name: str) -> type[nn.Module] | None:
    import transformers

    try:
        found = getattr(transformers, name)
    except (AttributeError, ImportError, RuntimeError):
        return None
    if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
        return found
    return None


def config_object(cls: type[nn.Module], config: Mapping[str, Any]) -> Any:
    """The class's own config type built from the dict: no hub, no remote code."""
    config_class = getattr(cls, "config_class", None)
    expected = getattr(config_class, "model_type", None)
    given = config.get("model_type")
    if config_class is None:
        raise InvalidArchitecture(f"{cls.__name__} has no config class of its own; it cannot be registered.")
    if given is not None and expected and given != expected:
        raise InvalidArchitecture(
            f"The config's model_type '{str(given)[:100]}' does not belong to {cls.__name__} "
            f"(which uses '{expected}').",
            {"model_type": str(given)[:100], "expected": expected},
        )
    try:
        return config_class.from_dict(dict(config))
    except Exception as exc:
        raise InvalidArchitecture(
            f"transformers refused the config for {cls.__name__}: {str(exc)[:300]}",
            {"class": cls.__name__},
        ) from None


def forward_parameters(cls: type[nn.Module]) -> list[str]:
    """The named arguments of ``cls.forward`` (what example inputs may be called)."""
    parameters = inspect.signature(cls.forward).parameters.values()
    return [
        p.name for p in parameters if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def positional_class(cls: type[nn.Module], names: tuple[str, ...]) -> type[nn.Module]:
    key = (cls.__module__, cls.__qualname__, names)
    made = _POSITIONAL.get(key)
    if made is None:
        made = _POSITIONAL.setdefault(key, _make_positional(cls, names))
    return made


_POSITIONAL: dict[tuple[str, str, tuple[str, ...]], type[nn.Module]] = {}


def _make_positional(cls: type[nn.Module], names: tuple[str, ...]) -> type[nn.Module]:
    """``cls`` whose forward takes the example inputs positionally (validation and export call it so),
    without a KV cache. Same attributes, so the same state_dict keys."""
    fixed = {"use_cache": False} if "use_cache" in forward_parameters(cls) else {}

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(names, args, strict=False))
        kwargs.update(fixed)
        return cls.forward(self, **kwargs)

    return type(cls.__name__, (cls,), {"forward": forward, "__qualname__": cls.__qualname__})


def _token_input(name: str, hf_config: Any, *, high: int, low: int = 0) -> InputSpec:
    longest = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    sequence = (
        min(EXAMPLE_SEQUENCE, longest) if isinstance(longest, int) and longest > 0 else EXAMPLE_SEQUENCE
    )
    return InputSpec(
        name, ("batch", "sequence"), dtype="int64", high=high, low=low, example_dims={"sequence": sequence}
    )

"""The recipe registry: whole-model initializations, from a manifest to resolved specs.

A recipe is a function registered with :func:`recipe`, shaped like a scheme: parameters
(:class:`~service.core.schemes.Param`), a docstring whose summary, ``Formula:`` and
``Source:`` lines the catalogue serves, and a rule per manifest entry. The rule names a
scheme and its parameters (and at most a :attr:`~service.core.spec.ResolvedSpec.fill_rows`
post-step); :func:`plan_recipe` resolves it with :func:`~service.core.schemes.resolve`,
so a recipe's tensor is exactly the spec a hand-written request would give, with the
recipe and its reason added to the derivation. (glob → spec) rules in the request win
over the recipe; a tensor that neither covers is an error listing every such name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from .errors import (
    InvalidParameterError,
    MissingParameterError,
    TensorinitError,
    UncoveredTensorsError,
    UnknownParameterError,
    UnknownRecipeError,
)
from .manifest import DENSE, NORMS, RECURRENT, Entry, Manifest, located, parse_manifest
from .schemes import REQUIRED, Limits, Param, check_dtype, resolve
from .spec import ELEMENTWISE, ResolvedSpec


@dataclass(frozen=True)
class Rule:
    """What a recipe does to one tensor: a scheme request, and why."""

    scheme: str
    params: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""
    fill_rows: tuple[tuple[int, int, float], ...] = ()


@dataclass
class RecipeContext:
    """What a recipe's rule sees: its checked parameters, the manifest with its roles, the convention."""

    recipe: str
    params: dict[str, Any]
    manifest: Manifest
    convention: str

    def role(self, entry: Entry, role: str) -> bool:
        return self.manifest.has_role(entry, role)


RecipeFn = Callable[[Entry, RecipeContext], Rule | None]


@dataclass(frozen=True)
class Recipe:
    name: str
    params: tuple[Param, ...]
    fn: RecipeFn
    summary: str
    formula: str
    source: str
    check: Callable[[dict[str, Any]], None] | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the catalogue."""
        params = []
        for p in self.params:
            item: dict[str, Any] = {"name": p.name, "type": p.type, "doc": p.doc, "required": p.required, "allowed": p.allowed()}
            if not p.required:
                item["default"] = p.default
            if p.choices is not None:
                item["choices"] = list(p.choices)
            params.append(item)
        return {"name": self.name, "summary": self.summary, "formula": self.formula, "source": self.source, "parameters": params}


RECIPES: dict[str, Recipe] = {}


def recipe(name: str, *params: Param, check: Callable[[dict[str, Any]], None] | None = None) -> Callable[[RecipeFn], RecipeFn]:
    """Register a recipe; its docstring gives summary, ``Formula:`` and ``Source:`` (as :func:`~service.core.schemes.scheme`)."""

    def register(fn: RecipeFn) -> RecipeFn:
        doc = [line.strip() for line in (fn.__doc__ or "").strip().splitlines()]
        pick = {key: " ".join(line[len(key) + 1 :].strip() for line in doc if line.startswith(key + ":")) for key in ("Formula", "Source")}
        RECIPES[name] = Recipe(name, params, fn, doc[0], pick["Formula"], pick["Source"], check)
        return fn

    return register


def lookup_recipe(name: object) -> Recipe:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key in RECIPES:
        return RECIPES[key]
    raise UnknownRecipeError(name, sorted(RECIPES))


# -- shared rules -------------------------------------------------------------------

ZEROS = Rule("zeros", why="zero")
ONES = Rule("ones", why="one")


def _norm(entry: Entry) -> Rule | None:
    """Every framework's norms: scale (and running variance) 1, shift (and running mean) 0."""
    if entry.kind not in NORMS:
        return None
    return ONES if entry.role in ("weight", "running_var") else ZEROS


def _is_bias(entry: Entry) -> bool:
    return entry.role is not None and ("bias" in entry.role.split(".")[-1])


def _uniform(bound: float, why: str) -> Rule:
    if bound == 0:
        return Rule("zeros", why=why + " (bound 0: zeros)")
    return Rule("uniform", {"low": -bound, "high": bound}, why)


def _packed_qkv(entry: Entry, ctx: RecipeContext) -> None:
    if entry.kind == "multihead_attention" and entry.role == "in_proj_weight":
        raise located(
            InvalidParameterError(
                "role",
                entry.role,
                f"separate q_proj_weight, k_proj_weight, v_proj_weight (or a rule for this tensor): recipe {ctx.recipe} scales v alone, and a packed in_proj_weight holds q, k and v",
            ),
            "tensors",
            entry.name,
        )


def _weight(entry: Entry) -> bool:
    return not _is_bias(entry) and len(entry.shape) >= 2


# -- the recipes --------------------------------------------------------------------


@recipe("torch")
def _torch(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """Each torch.nn module's own reset_parameters.

    Formula: Linear/Conv*/ConvTranspose* weight kaiming_uniform(a=√5) = U(±1/√fan_in), fan_in = shape[1]·prod(shape[2:]) (for ConvTranspose (in, out/groups, *k) that is out/groups·k); bias U(±1/√fan_in) (0 if fan_in = 0); Bilinear weight and bias U(±1/√in1); Embedding N(0, 1) with the padding_idx row 0; MultiheadAttention in_proj (packed (3E, E) or q/k/v) xavier_uniform, in_proj_bias 0, bias_k/bias_v xavier_normal, out_proj.weight as Linear, out_proj.bias 0; RNN/LSTM/GRU every weight and bias U(±1/√hidden_size); norms weight 1, bias 0, running_mean 0, running_var 1
    Source: torch/nn/modules/linear.py (Linear.reset_parameters, Bilinear.reset_parameters), conv.py (_ConvNd.reset_parameters), sparse.py (Embedding.reset_parameters, _fill_padding_idx_with_zero), activation.py (MultiheadAttention._reset_parameters), rnn.py (RNNBase.reset_parameters), normalization.py, batchnorm.py; He et al. 2015
    """
    kind, role = entry.kind, entry.role
    if kind in NORMS:
        return _norm(entry)
    if kind == "bilinear":
        in1 = (
            entry.shape[1]
            if role == "weight"
            else (weight.shape[1] if (weight := ctx.manifest.sibling(entry, "weight")) else entry.attribute("in_features", "torch"))
        )
        return _uniform(1.0 / math.sqrt(in1) if in1 else 0.0, "Bilinear: U(±1/√in1)")
    if kind in DENSE or (kind == "multihead_attention" and role in ("out_proj.weight",)):
        if role in ("weight", "out_proj.weight"):
            return Rule("he_uniform", {"negative_slope": math.sqrt(5.0)}, "kaiming_uniform(a=√5): U(±1/√fan_in)")
        fan_in = ctx.manifest.torch_fan_in(entry, "torch")
        return _uniform(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, f"bias: U(±1/√fan_in), fan_in {fan_in} of the weight")
    if kind == "embedding":
        padding = entry.attributes.get("padding_idx")
        rows: tuple[tuple[int, int, float], ...] = ()
        if padding is not None:
            n = entry.shape[0] if entry.shape else 0
            if not -n <= padding < n:
                raise located(
                    InvalidParameterError("padding_idx", padding, f"an index in [-{n}, {n - 1}] (num_embeddings {n})"),
                    "tensors",
                    entry.name,
                    "attributes",
                )
            padding %= n  # torch: padding_idx = num_embeddings + padding_idx when negative
            rows = ((padding, padding + 1, 0.0),)
        return Rule(
            "normal", {"mean": 0.0, "std": 1.0}, "Embedding: N(0, 1)" + (f", row {rows[0][0]} (padding_idx) 0" if rows else ""), rows
        )
    if kind == "multihead_attention":
        if role in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return Rule("glorot_uniform", {}, "MultiheadAttention: xavier_uniform")
        if role in ("bias_k", "bias_v"):
            return Rule("glorot_normal", {}, "MultiheadAttention: xavier_normal")
        return Rule("zeros", why="MultiheadAttention: bias 0")
    if kind in RECURRENT:
        hidden = entry.attribute("hidden_size", "torch")
        return _uniform(1.0 / math.sqrt(hidden) if hidden > 0 else 0.0, f"{kind.upper()}: U(±1/√hidden_size), hidden_size {hidden}")
    return None


def _framework_recurrent(entry: Entry, ctx: RecipeContext, kernel: Rule) -> Rule:
    role = entry.role or ""
    if role.startswith(("weight_ih", "weight_hr")):
        return kernel
    if role.startswith("weight_hh"):
        return Rule("orthogonal", {}, "recurrent kernel: orthogonal")
    return ZEROS


@recipe("keras")
def _keras(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """Keras 3 layers' defaults.

    Formula: Dense/Conv*/ConvTranspose* kernel glorot_uniform U(±√(6/(fan_in+fan_out))), bias 0; Embedding U(±0.05); LSTM/GRU/SimpleRNN kernel glorot_uniform, recurrent kernel orthogonal, bias 0, LSTM forget-gate bias 1 (unit_forget_bias: rows [H, 2H) of bias_ih, torch's gate order i, f, g, o); MultiHeadAttention kernels glorot_uniform on the manifest's tensors (a torch packed (3E, E) in_proj takes the packed matrix's fans, not those of Keras' per-head (E, heads, dim) kernels), biases 0; norms gamma 1, beta 0, moving_mean 0, moving_variance 1. Fans in the request's convention (torch layout by default)
    Source: keras/src/layers/core/dense.py, convolutional/base_conv.py, core/embedding.py (embeddings_initializer="uniform": RandomUniform(-0.05, 0.05)), rnn/lstm.py (unit_forget_bias), attention/multi_head_attention.py, normalization/*.py; Glorot & Bengio 2010
    """
    kind = entry.kind
    if kind in NORMS:
        return _norm(entry)
    kernel = Rule("glorot_uniform", {}, "kernel: glorot_uniform")
    if kind in DENSE:
        return kernel if entry.role == "weight" else ZEROS
    if kind == "embedding":
        return Rule("uniform", {"low": -0.05, "high": 0.05}, "Embedding: U(±0.05)")
    if kind == "multihead_attention":
        if entry.role in ("bias_k", "bias_v"):
            return None  # no Keras counterpart: a rule must say
        return ZEROS if _is_bias(entry) else kernel
    if kind in RECURRENT:
        rule = _framework_recurrent(entry, ctx, kernel)
        if kind == "lstm" and (entry.role or "").startswith("bias_ih"):
            hidden = entry.attribute("hidden_size", "keras")
            return Rule("zeros", why="LSTM bias 0, forget gate 1 (unit_forget_bias)", fill_rows=((hidden, 2 * hidden, 1.0),))
        return rule
    return None


@recipe("flax")
def _flax(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """Flax linen modules' defaults.

    Formula: Dense/DenseGeneral/Conv/ConvTranspose kernel lecun_normal: truncated normal at ±2σ with realised std 1/√fan_in, bias 0; Embed variance_scaling(1, fan_in, normal, out_axis=0) = N(0, 1/features), untruncated; attention projections as Dense; LSTMCell/GRUCell input kernel lecun_normal, recurrent kernel orthogonal, bias 0; LayerNorm/RMSNorm/BatchNorm/GroupNorm scale 1, bias 0. Fans in the request's convention (use jax for flax's (*k, in, out) layout)
    Source: flax/linen/linear.py (default_kernel_init = lecun_normal(), default_embed_init), linen/recurrent.py (LSTMCell), linen/normalization.py; jax/_src/nn/initializers.py (variance_scaling); LeCun et al. 1998
    """
    kind = entry.kind
    if kind in NORMS:
        return _norm(entry)
    kernel = Rule("lecun_normal", {"truncated": True}, "kernel: lecun_normal (truncated)")
    if kind in DENSE or kind == "multihead_attention":
        return ZEROS if _is_bias(entry) else kernel
    if kind == "embedding":
        features = entry.shape[-1] if entry.shape else 0
        if features == 0:
            return ZEROS
        return Rule("normal", {"mean": 0.0, "std": 1.0 / math.sqrt(features)}, f"Embed: N(0, 1/features), features {features}")
    if kind in RECURRENT:
        return _framework_recurrent(entry, ctx, kernel)
    return None


N_LAYER = Param("n_layer", "integer", "number of transformer blocks (each adds two residual projections)", default=REQUIRED, minimum=1)


@recipe("gpt2", N_LAYER, Param("std", "number", "std of every weight", default=0.02, exclusive_minimum=0.0))
def _gpt2(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """GPT-2's initialization as nanoGPT and transformers write it.

    Formula: Linear and Embedding weights N(0, std²), std = 0.02; residual output projections (role residual_out, default *c_proj.weight and the like) N(0, (std/√(2·n_layer))²); biases 0; LayerNorm 1/0
    Source: karpathy/nanoGPT model.py (GPT._init_weights and the c_proj.weight loop); huggingface transformers models/gpt2/modeling_gpt2.py (_init_weights); Radford et al. 2019
    """
    std, n_layer = ctx.params["std"], ctx.params["n_layer"]
    if entry.kind in NORMS:
        return _norm(entry)
    if entry.kind not in ("linear", "embedding", "multihead_attention"):
        return None
    if _is_bias(entry):
        return ZEROS
    if ctx.role(entry, "residual_out"):
        return Rule("normal", {"mean": 0.0, "std": std / math.sqrt(2 * n_layer)}, f"residual projection: N(0, (std/√(2·{n_layer}))²)")
    return Rule("normal", {"mean": 0.0, "std": std}, "N(0, std²)")


def fixup_multiplier(num_layers: int, m: int) -> float:
    """Fixup's scale of a residual branch's layers: L^(−1/(2m−2)) for L branches of m layers."""
    return float(num_layers ** (-1.0 / (2 * m - 2)))


@recipe(
    "fixup",
    Param("num_layers", "integer", "L: the number of residual branches", default=REQUIRED, minimum=1),
    Param("m", "integer", "layers per residual branch (2 for a basic block, 3 for a bottleneck)", default=2, minimum=2),
)
def _fixup(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """Fixup: residual networks without normalization (Zhang, Dauphin & Ma, ICLR 2019).

    Formula: layers of a residual branch (role residual_branch) He normal N(0, 2/fan_out) × L^(−1/(2m−2)), except the branch's last layer (role residual_out, default *.conv<m>.weight) 0; the final classifier (role readout) weight and bias 0; other convs and linears (stem, downsample) He normal N(0, 2/fan_out); biases 0; norms, if any, 1/0. Fixup's scalar biases and multipliers are free parameters: cover them with rules ("*.bias1a": "zeros", "*.scale": "ones")
    Source: hongyi-zhang/Fixup imagenet/models/fixup_resnet_imagenet.py (FixupResNet.__init__: normal_(std=√(2/(shape[0]·prod(shape[2:]))) · num_layers^(−0.5) or ^(−0.25)), constant_(conv2/conv3, 0), constant_(fc, 0))
    """
    branches, m = ctx.params["num_layers"], ctx.params["m"]
    if entry.kind in NORMS:
        return _norm(entry)
    if entry.kind not in DENSE:
        return None
    if _is_bias(entry) or ctx.role(entry, "readout"):
        return Rule("zeros", why="readout: 0" if ctx.role(entry, "readout") else "bias: 0")
    last = (
        fnmatchcase(entry.name, f"*.conv{m}.weight") if "residual_out" not in ctx.manifest.overridden else ctx.role(entry, "residual_out")
    )
    if last:
        return Rule("zeros", why=f"last layer of a residual branch (conv{m}): 0")
    if ctx.role(entry, "residual_branch"):
        scale = fixup_multiplier(branches, m)
        return Rule(
            "he_normal",
            {"mode": "fan_out", "gain": math.sqrt(2.0) * scale},
            f"branch layer: He normal (fan_out) × L^(−1/(2m−2)) = × {scale:.6g}",
        )
    return Rule("he_normal", {"mode": "fan_out", "nonlinearity": "relu"}, "He normal (fan_out)")


def _depths(params: dict[str, Any], recipe_name: str) -> None:
    if params["encoder_layers"] == 0 and params["decoder_layers"] == 0:
        raise located(
            MissingParameterError("encoder_layers", f"encoder_layers N or decoder_layers M (at least one ≥ 1) for recipe {recipe_name}"),
            "recipe_params",
        )


ENCODER_LAYERS = Param("encoder_layers", "integer", "N: encoder layers (0: no encoder)", default=0, minimum=0)
DECODER_LAYERS = Param("decoder_layers", "integer", "M: decoder layers (0: no decoder)", default=0, minimum=0)


def _scaled_set(entry: Entry, ctx: RecipeContext) -> bool:
    """The tensors DeepNet and T-Fixup scale: FFN weights, v_proj and the attention output projection."""
    return ctx.role(entry, "ffn") or ctx.role(entry, "v_proj") or ctx.role(entry, "residual_out")


def _side(entry: Entry, ctx: RecipeContext) -> str | None:
    if ctx.role(entry, "decoder"):
        return "decoder"
    if ctx.role(entry, "encoder"):
        return "encoder"
    return None


def _transformer(entry: Entry, ctx: RecipeContext, base: str, embedding_scale: float, gains: dict[str, tuple[float, str]]) -> Rule | None:
    """DeepNet's and T-Fixup's shared shape: a Xavier base, FFN/v/out weights scaled per side, embeddings N(0, d^(−1/2))·scale."""
    n, m = ctx.params["encoder_layers"], ctx.params["decoder_layers"]
    if entry.kind in NORMS:
        return _norm(entry)
    if entry.kind == "embedding":
        std = entry.shape[-1] ** -0.5 * embedding_scale
        return Rule("normal", {"mean": 0.0, "std": std}, f"embedding: N(0, d^(−1/2)) × {embedding_scale:.6g}")
    if entry.kind not in DENSE and entry.kind != "multihead_attention":
        return None
    if _is_bias(entry):
        return ZEROS
    _packed_qkv(entry, ctx)
    side = _side(entry, ctx) or ("decoder" if n == 0 else "encoder" if m == 0 else None)
    if side in gains and _scaled_set(entry, ctx):
        gain, why = gains[side]
        return Rule(base, {"gain": gain}, why)
    return Rule(base, {}, base.replace("glorot", "xavier"))


def t_fixup_multipliers(n: int, m: int) -> dict[str, float]:
    """T-Fixup's scale factors: encoder 0.67·N^(−1/4), decoder (9M)^(−1/4), embeddings (9M)^(−1/4) (encoder-only: (9N)^(−1/4))."""
    return {
        "encoder": 0.67 * n**-0.25 if n else 1.0,
        "decoder": (9 * m) ** -0.25 if m else 1.0,
        "embedding": (9 * m) ** -0.25 if m else (9 * n) ** -0.25,
    }


@recipe("t_fixup", ENCODER_LAYERS, DECODER_LAYERS, check=lambda p: _depths(p, "t_fixup"))
def _t_fixup(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """T-Fixup: Transformers without LayerNorm or warm-up (Huang, Perez, Ba & Volkovs, ICML 2020).

    Formula: weights xavier_uniform; embeddings N(0, d^(−1/2)) × (9M)^(−1/4) (encoder-only: × (9N)^(−1/4)); in every encoder layer v_proj, the attention output projection and the FFN weights × 0.67·N^(−1/4); in every decoder layer (self- and cross-attention) × (9M)^(−1/4); biases 0. Layer sides by role encoder/decoder (default *encoder*, *decoder*; decoder-only models: every layer counts as decoder); needs separate q/k/v projections
    Source: Huang et al. 2020, Algorithm 2 (the paper's Xavier base with gain 1; layer6ai-labs/T-Fixup's fairseq code multiplies v_proj by an extra √2 only to undo fairseq's xavier gain 1/√2 on v, so on this base it is already there)
    """
    n, m = ctx.params["encoder_layers"], ctx.params["decoder_layers"]
    mult = t_fixup_multipliers(n, m)
    gains = {side: (mult[side], f"{side} v/out/FFN: xavier_uniform × {mult[side]:.6g}") for side in ("encoder", "decoder")}
    return _transformer(entry, ctx, "glorot_uniform", mult["embedding"], gains)


def deepnet_constants(n: int, m: int, beta_source: str = "paper") -> dict[str, float]:
    """DeepNorm's α (the residual multiplier, not an init) and β (the init gain), per side.

    Encoder-only α = (2N)^(1/4), β = (8N)^(−1/4); decoder-only α = (2M)^(1/4), β = (8M)^(−1/4);
    encoder–decoder: encoder α = 0.81·(N⁴M)^(1/16), β = 0.87·(N⁴M)^(−1/16), decoder
    α = (3M)^(1/4), β = (12M)^(−1/4). torchscale's encoder of an encoder–decoder divides by
    (N⁴M)^(1/16)/1.15, i.e. β = 1.15·(N⁴M)^(−1/16) (``beta_source="torchscale"``).
    """
    if n and m:
        base = (n**4 * m) ** (1 / 16)
        enc_beta = (1.15 if beta_source == "torchscale" else 0.87) / base
        return {"encoder_alpha": 0.81 * base, "encoder_beta": enc_beta, "decoder_alpha": (3 * m) ** 0.25, "decoder_beta": (12 * m) ** -0.25}
    if n:
        return {"encoder_alpha": (2 * n) ** 0.25, "encoder_beta": (8 * n) ** -0.25}
    return {"decoder_alpha": (2 * m) ** 0.25, "decoder_beta": (8 * m) ** -0.25}


@recipe(
    "deepnet",
    ENCODER_LAYERS,
    DECODER_LAYERS,
    Param(
        "beta_source",
        "string",
        "encoder β of an encoder–decoder: the paper's 0.87·(N⁴M)^(−1/16) or torchscale's 1.15·(N⁴M)^(−1/16)",
        default="paper",
        choices=("paper", "torchscale"),
    ),
    check=lambda p: _depths(p, "deepnet"),
)
def _deepnet(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """DeepNet / DeepNorm: x ← LN(α·x + G(x)) with β-scaled init (Wang et al., 2022).

    Formula: weights xavier_normal; FFN weights, v_proj and the attention output projection × β (xavier_normal with gain β), others gain 1; encoder-only β = (8N)^(−1/4); decoder-only β = (8M)^(−1/4); encoder–decoder encoder β = 0.87·(N⁴M)^(−1/16) (paper; beta_source=torchscale: 1.15·(N⁴M)^(−1/16)), decoder β = (12M)^(−1/4); α (the model's residual multiplier) is reported in the derivation; embeddings N(0, d^(−1/2)); biases 0; norms 1/0. The paper's β is the default because it is the one derived in the paper (its Table/Figure 2 and Appendix): torchscale's 1.15 is the reciprocal of the paper's 0.87 and gives a larger encoder init than the paper's analysis bounds
    Source: Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers" (Figure 2 pseudo-code: xavier_normal_(w, gain=β) for ffn, v_proj, out_proj); microsoft/torchscale torchscale/architecture/encoder.py and decoder.py (init_scale, p.data.div_(init_scale) for fc1, fc2, out_proj, v_proj)
    """
    n, m = ctx.params["encoder_layers"], ctx.params["decoder_layers"]
    consts = deepnet_constants(n, m, ctx.params["beta_source"])
    gains = {
        side: (
            consts[f"{side}_beta"],
            f"{side} v/out/FFN: xavier_normal gain β = {consts[f'{side}_beta']:.6g} (α = {consts[f'{side}_alpha']:.6g})",
        )
        for side in ("encoder", "decoder")
        if f"{side}_beta" in consts
    }
    return _transformer(entry, ctx, "glorot_normal", 1.0, gains)


def mup_width_mult(entry: Entry, width_mult: float | None) -> tuple[int, float | None]:
    """(number of infinite dimensions, the tensor's width multiplier) as microsoft/mup's infshape gives them.

    With an attribute base_shape: the dimensions that differ from it are infinite, and the
    multiplier is that of the fan_in dimension (torch layout, axis 1) if it is infinite,
    else of fan_out (axis 0). Without it: a rank ≥ 2 weight is taken to be hidden (two
    infinite dimensions) with the request's width_mult, anything else vector-like.
    """
    base = entry.attributes.get("base_shape")
    if base is not None:
        if len(base) != len(entry.shape):
            raise located(
                InvalidParameterError("base_shape", list(base), f"a shape of rank {len(entry.shape)}"), "tensors", entry.name, "attributes"
            )
        inf = [i for i, (d, b) in enumerate(zip(entry.shape, base, strict=True)) if d != b]
        axis = 1 if 1 in inf else 0 if 0 in inf else None
        mult = entry.shape[axis] / base[axis] if axis is not None and base[axis] else None
        return len(inf), mult
    return (2 if len(entry.shape) >= 2 else 1), width_mult


@recipe(
    "mup",
    Param(
        "width_mult", "number", "d/d_base: width over the base width (or give every weight a base_shape attribute)", exclusive_minimum=0.0
    ),
    Param("std", "number", "the base model's std of every weight (as GPT-2's 0.02)", default=0.02, exclusive_minimum=0.0),
    Param(
        "readout",
        "string",
        "zero: the readout starts at 0; fold: N(0, std²) × 1/width_mult (MuReadout's forward 1/width_mult folded into a plain Linear head); unscaled: N(0, std²) (the model uses MuReadout)",
        default="fold",
        choices=("zero", "fold", "unscaled"),
    ),
)
def _mup(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """μP, the maximal-update parametrization (Yang et al., Tensor Programs V, 2022).

    Formula: hidden weights (two infinite dimensions) N(0, std²/width_mult); input weights and embeddings (one infinite dimension) N(0, std²); biases 0; norms 1/0; readout (role readout): 0, or N(0, std²)/width_mult (fold), or N(0, std²) (unscaled, when the model's MuReadout divides by width_mult itself). At width_mult 1 every tensor is N(0, std²): the base model is unchanged
    Source: microsoft/mup mup/init.py (constant_std_init_: sampler scaled by infshape.width_mult()^(−1/2) when ninf() == 2), mup/layer.py (MuReadout: output × output_mult/width_mult, readout_zero_init); Yang et al. 2022, Table 3
    """
    std = ctx.params["std"]
    if entry.kind in NORMS:
        return _norm(entry)
    if entry.kind not in DENSE and entry.kind not in ("embedding", "multihead_attention"):
        return None
    if _is_bias(entry):
        return ZEROS
    ninf, mult = mup_width_mult(entry, ctx.params["width_mult"])
    if entry.kind == "embedding":
        return Rule("normal", {"mean": 0.0, "std": std}, "input weights: N(0, std²)")
    if mult is None and (ninf == 2 or ctx.role(entry, "readout")):
        raise located(MissingParameterError("width_mult", "a number > 0 (or a base_shape attribute on every weight)"), "recipe_params")
    if ctx.role(entry, "readout"):
        choice = ctx.params["readout"]
        if choice == "zero":
            return Rule("zeros", why="readout: 0 (readout_zero_init)")
        scale = 1.0 / mult if choice == "fold" and mult else 1.0
        return Rule("normal", {"mean": 0.0, "std": std * scale}, f"readout: N(0, std²) × {scale:.6g}")
    if ninf == 2 and mult is not None:
        return Rule("normal", {"mean": 0.0, "std": std * mult**-0.5}, f"hidden: N(0, std²/width_mult), width_mult {mult:g}")
    return Rule("normal", {"mean": 0.0, "std": std}, "vector-like: N(0, std²)")


# -- planning --------------------------------------------------------------------------

RULE_FIELDS = frozenset({"scheme", "dtype", "convention", "in_axes", "out_axes", "batch_axes"})


def _check_params(found: Recipe, given: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(given or {})
    known = {p.name for p in found.params}
    for key in given:
        if key not in known:
            raise located(
                UnknownParameterError(key, given[key], f"{', '.join(sorted(known)) or 'no parameters'} for recipe {found.name}"),
                "recipe_params",
            )
    values: dict[str, Any] = {}
    for p in found.params:
        if given.get(p.name) is not None:
            value = given[p.name]
            if p.type == "integer" and isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON has one number type: 12.0 is the integer 12, as in scheme requests
            try:
                values[p.name] = p.check(value)
            except TensorinitError as err:
                raise located(err, "recipe_params") from None
        elif p.required:
            raise located(MissingParameterError(p.name, f"{p.allowed()} ({p.doc}; recipe {found.name} needs it)"), "recipe_params")
        else:
            values[p.name] = p.default
    if found.check is not None:
        found.check(values)
    return values


def normalize_rules(rules: Any) -> list[tuple[str, dict[str, Any] | None]]:
    """Request rules as ordered (pattern, fields or None); an object or a list of [pattern, spec] pairs."""
    if rules is None:
        return []
    items = rules.items() if isinstance(rules, Mapping) else rules
    allowed = "an object {glob: spec} or a list of [glob, spec] pairs; spec: a scheme name, an object with scheme and its parameters (no shape, no name), or null to leave the tensor out"
    if not isinstance(items, Sequence | type({}.items())) or isinstance(items, str):
        raise InvalidParameterError("rules", rules, allowed)
    out: list[tuple[str, dict[str, Any] | None]] = []
    for i, item in enumerate(items):
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidParameterError(f"rules[{i}]", item, allowed)
        pattern, spec = item
        if spec is None:
            out.append((pattern, None))
            continue
        fields = {"scheme": spec} if isinstance(spec, str) else dict(spec) if isinstance(spec, Mapping) else None
        if fields is None or "scheme" not in fields or "shape" in fields or "name" in fields:
            raise located(InvalidParameterError(pattern, spec, allowed), "rules")
        out.append((pattern, fields))
    return out


@dataclass(frozen=True)
class RecipePlan:
    """The outcome of a recipe over a manifest: the resolved specs (request order) and the names rules left out."""

    specs: list[ResolvedSpec]
    skipped: list[str]


def plan_recipe(
    name: str,
    tensors: Mapping[str, Any],
    *,
    recipe_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    dtype: str | None = None,
    convention: str | None = None,
    algorithm: int | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    rules: Any = None,
    limits: Limits | None = None,
) -> RecipePlan:
    """Every tensor of the manifest resolved: by the first matching rule, else by the recipe.

    Raises a :class:`~service.core.errors.TensorinitError` naming what is wrong (the
    manifest entry, the recipe parameter); :class:`UncoveredTensorsError` lists every
    tensor neither a rule nor the recipe covers.
    """
    found = lookup_recipe(name)
    params = _check_params(found, recipe_params)
    manifest = parse_manifest(tensors, roles)
    normalized = normalize_rules(rules)
    convention = convention or "torch"
    default_dtype = check_dtype(dtype) if dtype is not None else None
    ctx = RecipeContext(found.name, params, manifest, convention)
    specs: list[ResolvedSpec] = []
    skipped: list[str] = []
    uncovered: list[str] = []
    for entry in manifest.entries.values():
        options: dict[str, Any] = {"seed": seed, "name": entry.name, "convention": convention, "algorithm": algorithm, "limits": limits}
        options["dtype"] = entry.dtype or default_dtype or "float32"
        rule_fields = next((fields for pattern, fields in normalized if fnmatchcase(entry.name, pattern)), False)
        try:
            if rule_fields is None:
                skipped.append(entry.name)
                continue
            if rule_fields is not False:
                assert isinstance(rule_fields, dict)
                extra = {k: v for k, v in rule_fields.items() if k in RULE_FIELDS - {"scheme"} and v is not None}
                scheme_params = {k: v for k, v in rule_fields.items() if k not in RULE_FIELDS}
                spec = resolve(str(rule_fields["scheme"]), entry.shape, params=scheme_params, **{**options, **extra})
                specs.append(replace(spec, derivation=(*spec.derivation, ("recipe", f"{found.name}: overridden by a request rule"))))
                continue
            rule = found.fn(entry, ctx)
            if rule is None:
                uncovered.append(entry.name)
                continue
            spec = resolve(rule.scheme, entry.shape, params=dict(rule.params), **options)
        except TensorinitError as err:
            raise err if getattr(err, "where", None) else located(err, "tensors", entry.name) from None
        if rule.fill_rows and not isinstance(spec.distribution, ELEMENTWISE):  # pragma: no cover - recipes only fill elementwise ones
            raise TypeError(f"{found.name}: fill_rows on a {spec.distribution.kind} tensor")
        derivation = (*spec.derivation, ("recipe", found.name), ("recipe_rule", rule.why))
        specs.append(replace(spec, derivation=tuple(sorted(derivation)), fill_rows=rule.fill_rows))
    if uncovered:
        raise UncoveredTensorsError(found.name, uncovered)
    seen: dict[str, str] = {}
    for spec, entry_name in zip(specs, (e.name for e in manifest.entries.values() if e.name not in skipped), strict=True):
        if spec.name in seen:  # names are NFC-normalized when resolved: two keys may become one
            raise located(
                InvalidParameterError(
                    entry_name, entry_name, f"distinct names (the same as {seen[spec.name]!r} after Unicode NFC normalization)"
                ),
                "tensors",
            )
        seen[spec.name] = entry_name
    return RecipePlan(specs, skipped)


# -- Hugging Face transformers (the rules live with each architecture) -----------------


def _hf_config(params: dict[str, Any]) -> None:
    from .architectures import manifest_from_config  # noqa: PLC0415 -- architectures import this module

    try:
        entries = manifest_from_config(params["config"])
    except TensorinitError as err:
        raise located(err, "recipe_params", *getattr(err, "where", ())) from None
    # Built once per plan, not once per tensor: the recipe's rule looks tensors up here.
    params["_tensors"] = {e.name: e for e in entries}


@recipe(
    "transformers",
    Param(
        "config",
        "object",
        "a Hugging Face config.json: model_type, architectures and the fields GET /models lists (missing ones take transformers' defaults)",
        default=REQUIRED,
    ),
    check=_hf_config,
)
def _transformers(entry: Entry, ctx: RecipeContext) -> Rule | None:
    """Hugging Face transformers 5.x: every tensor as from_config(config) initializes it (_init_weights of each architecture).

    Formula: std = initializer_range (0 or null: 0.02), else init_std (OPT), else initializer_factor; Linear weights N(0, std²) untruncated, biases 0; Embedding N(0, std²) with its pad_token_id (padding_idx) row 0; LayerNorm/RMSNorm weight 1, bias 0. Exceptions: Gemma, Gemma2 RMSNorm weights 0 (the norm computes x·(1 + w)); GPT-2 Conv1D weights N(0, initializer_range²) and every attn/mlp c_proj.weight N(0, (initializer_range/√(2·n_layer))²), wte/wpe without a padding row; BERT's MLM head bias (cls.predictions.bias) 0; the MoE routers and every expert (Mixtral's w1/w2/w3, Qwen3-MoE's gate/up/down_proj) N(0, initializer_range²); T5 with f = initializer_factor: shared N(0, f²), q N(0, f²/(d_model·d_kv)), k and v N(0, f²/d_model), o N(0, f²/(n_heads·d_kv)), relative_attention_bias N(0, f²/d_model), wi/wi_0/wi_1 N(0, f²/d_model), wo N(0, f²/d_ff), T5LayerNorm weight f; OPT positions (max_position_embeddings + 2 rows) N(0, init_std²). Tensor names and shapes are those save_pretrained writes (GET /models; service.core.architectures)
    Source: huggingface/transformers 5.x modeling_utils.py (PreTrainedModel._init_weights), initialization.py, models/gemma*/modeling_gemma*.py, models/gpt2/modeling_gpt2.py, models/bert/modeling_bert.py, models/t5/modeling_t5.py, models/mixtral/modeling_mixtral.py, models/qwen3_moe/modeling_qwen3_moe.py (each _init_weights), conversion_mapping.py (the MoE models' on-disk names)
    """
    found = ctx.params["_tensors"].get(entry.name)
    if found is None:
        return None
    if tuple(found.shape) != entry.shape:
        raise located(
            InvalidParameterError("shape", list(entry.shape), f"{list(found.shape)}: the shape recipe_params.config gives {entry.name}"),
            "tensors",
            entry.name,
        )
    rule: Rule = found.init
    return rule

"""The shape numbers of a Qwen2-VL checkpoint that decide its memory: parameter counts by kind and KV bytes per
token, from a config.json or written out for the released 2B and 7B models (the memory plan's input)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelDims:
    """The shape numbers of a Qwen2-VL checkpoint that decide its memory."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_embeddings: bool
    max_positions: int
    vision_depth: int
    vision_dim: int
    vision_heads: int
    vision_mlp_ratio: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3

    @classmethod
    def from_config(cls, cfg: dict, name: str = "checkpoint") -> "ModelDims":
        """From a Qwen2-VL config.json (text fields at the top level or under `text_config`)."""
        t = {**cfg, **cfg.get("text_config", {})}
        v = cfg.get("vision_config")
        if v is None or "hidden_size" not in t:
            raise ValueError(f"{name}: expected a Qwen2-VL config with text fields and a vision_config, got keys {sorted(cfg)}")
        return cls(
            name=name, hidden=t["hidden_size"], layers=t["num_hidden_layers"], heads=t["num_attention_heads"],
            kv_heads=t.get("num_key_value_heads", t["num_attention_heads"]),
            head_dim=t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"],
            intermediate=t["intermediate_size"], vocab=t["vocab_size"],
            tie_embeddings=bool(cfg.get("tie_word_embeddings", t.get("tie_word_embeddings", False))),
            max_positions=t.get("max_position_embeddings", 32768),
            vision_depth=v["depth"], vision_dim=v["embed_dim"], vision_heads=v["num_heads"],
            vision_mlp_ratio=int(v.get("mlp_ratio", 4)), patch_size=v.get("patch_size", 14),
            temporal_patch_size=v.get("temporal_patch_size", 2), merge_size=v.get("spatial_merge_size", 2),
            in_channels=v.get("in_channels", v.get("in_chans", 3)),
        )

    # Parameter counts (GEMM weights are what quantization shrinks; the rest stays in float).
    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def llm_gemm_params(self) -> int:
        h, k = self.hidden, self.kv_dim
        per_layer = 2 * h * self.heads * self.head_dim + 2 * h * k + 3 * h * self.intermediate
        return self.layers * per_layer

    def llm_other_params(self) -> int:
        per_layer = self.heads * self.head_dim + 2 * self.kv_dim + 2 * self.hidden  # q/k/v biases, 2 RMSNorms
        return self.layers * per_layer + self.hidden  # final norm

    def embed_params(self) -> int:
        return self.vocab * self.hidden

    def vision_gemm_params(self) -> int:
        return self.vision_patch_gemm_params() + self.vision_merger_params()

    def vision_patch_gemm_params(self) -> int:
        """The products every patch goes through: the patch embedding and the blocks' qkv, proj, fc1, fc2."""
        e, r = self.vision_dim, self.vision_mlp_ratio
        patch = e * self.in_channels * self.temporal_patch_size * self.patch_size ** 2
        return patch + self.vision_depth * (4 * e * e + 2 * r * e * e)

    def vision_merger_params(self) -> int:
        """The merger's two products, applied once per merge_size² patches."""
        e, m2 = self.vision_dim, self.merge_size ** 2
        return (e * m2) ** 2 + e * m2 * self.hidden

    def vision_other_params(self) -> int:
        e, r, m2 = self.vision_dim, self.vision_mlp_ratio, self.merge_size ** 2
        per_block = 4 * e + 3 * e + e + r * e + e  # 2 LayerNorms (w, b), qkv/proj/fc1/fc2 biases
        return self.vision_depth * per_block + 2 * e + e * m2 + self.hidden

    def param_count(self) -> int:
        """Unique parameters, as PyTorch counts them (a tied lm_head shares the embedding)."""
        head = 0 if self.tie_embeddings else self.embed_params()
        return (self.llm_gemm_params() + self.llm_other_params() + self.embed_params() + head
                + self.vision_gemm_params() + self.vision_other_params())

    def kv_bytes_per_token(self, kv_bytes: int) -> int:
        return 2 * self.layers * self.kv_dim * kv_bytes


#: Qwen2-VL-2B/7B(-Instruct) config.json numbers, written out so planning needs no download.
MODELS = {
    "qwen2-vl-2b": ModelDims("qwen2-vl-2b", hidden=1536, layers=28, heads=12, kv_heads=2, head_dim=128,
                             intermediate=8960, vocab=151936, tie_embeddings=True, max_positions=32768,
                             vision_depth=32, vision_dim=1280, vision_heads=16, vision_mlp_ratio=4),
    "qwen2-vl-7b": ModelDims("qwen2-vl-7b", hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128,
                             intermediate=18944, vocab=152064, tie_embeddings=False, max_positions=32768,
                             vision_depth=32, vision_dim=1280, vision_heads=16, vision_mlp_ratio=4),
}


def resolve_model(model) -> ModelDims:
    """A ModelDims from itself, a known name (`qwen2-vl-2b`), a checkpoint directory or a config.json path."""
    if isinstance(model, ModelDims):
        return model
    if str(model) in MODELS:
        return MODELS[str(model)]
    path = Path(model)
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json at {path}; expected a checkpoint directory or one of {sorted(MODELS)}")
    return ModelDims.from_config(json.loads(cfg_path.read_text()), name=path.name)

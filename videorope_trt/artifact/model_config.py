"""One record of a Qwen2-VL checkpoint's config.json: the sizes that shape its graphs and its memory, and the
token ids generation needs. Every stage reads the model through `ModelConfig.from_config`; nothing else parses
config.json for sizes.

The published Qwen2-VL-2B/7B(-Instruct) configs are written out here (`PUBLISHED`), so that planning and the
random-weight benchmarks need no download.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelConfig:
    """The numbers of a Qwen2-VL config.json that the toolchain reads."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_positions: int
    vision_depth: int
    vision_dim: int
    vision_heads: int
    vision_mlp_ratio: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    eos_token_ids: tuple = (151645,)
    pad_token_id: int = 151643

    @classmethod
    def from_config(cls, cfg: dict, name: str = "checkpoint") -> "ModelConfig":
        """From a Qwen2-VL config.json dict (text fields at the top level or under `text_config`)."""
        t = {**cfg, **(cfg.get("text_config") or {})}
        v = cfg.get("vision_config")
        if v is None or "hidden_size" not in t or "num_attention_heads" not in t:
            raise ValueError(f"{name}: expected a Qwen2-VL config with text fields and a vision_config, got keys "
                             f"{sorted(cfg)}")
        get = lambda k, d: cfg.get(k, t.get(k, d))  # token ids sit at either level
        eos = get("eos_token_id", 151645)
        eos = tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else (int(eos),)
        # Qwen2-VL pads with <|endoftext|>, which its config records as bos_token_id
        pad = next(x for x in (get("pad_token_id", None), get("bos_token_id", None), eos[0]) if x is not None)
        heads = t["num_attention_heads"]
        return cls(
            name=name, hidden_size=t["hidden_size"], num_layers=t["num_hidden_layers"], num_heads=heads,
            num_kv_heads=t.get("num_key_value_heads") or heads,
            head_dim=t.get("head_dim") or t["hidden_size"] // heads,
            intermediate_size=t["intermediate_size"], vocab_size=t["vocab_size"],
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            max_positions=t.get("max_position_embeddings", 32768),
            vision_depth=v["depth"], vision_dim=v["embed_dim"], vision_heads=v["num_heads"],
            vision_mlp_ratio=int(v.get("mlp_ratio", 4)), patch_size=v.get("patch_size", 14),
            temporal_patch_size=v.get("temporal_patch_size", 2), spatial_merge_size=v.get("spatial_merge_size", 2),
            in_channels=v.get("in_channels", v.get("in_chans", 3)),
            image_token_id=get("image_token_id", 151655), video_token_id=get("video_token_id", 151656),
            vision_start_token_id=get("vision_start_token_id", 151652),
            vision_end_token_id=get("vision_end_token_id", 151653), eos_token_ids=eos, pad_token_id=int(pad),
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    # -- derived sizes ------------------------------------------------------------------------------------------
    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def patch_dim(self) -> int:
        """Columns of `pixel_values`: channels × temporal patch × patch²."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    def kv_bytes_per_token(self, kv_bytes: float) -> int:
        """Every layer's K and V for one token, at `kv_bytes` per element."""
        return int(2 * self.num_layers * self.kv_dim * kv_bytes)

    # -- parameter counts (GEMM weights are what quantization shrinks; the rest stays in float) ------------------
    def llm_gemm_params(self) -> int:
        h, k = self.hidden_size, self.kv_dim
        per_layer = 2 * h * self.num_heads * self.head_dim + 2 * h * k + 3 * h * self.intermediate_size
        return self.num_layers * per_layer

    def llm_other_params(self) -> int:
        per_layer = self.num_heads * self.head_dim + 2 * self.kv_dim + 2 * self.hidden_size  # q/k/v biases, 2 norms
        return self.num_layers * per_layer + self.hidden_size  # final norm

    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def vision_gemm_params(self) -> int:
        return self.vision_patch_gemm_params() + self.vision_merger_params()

    def vision_patch_gemm_params(self) -> int:
        """The products every patch goes through: the patch embedding and the blocks' qkv, proj, fc1, fc2."""
        e, r = self.vision_dim, self.vision_mlp_ratio
        return e * self.patch_dim + self.vision_depth * (4 * e * e + 2 * r * e * e)

    def vision_merger_params(self) -> int:
        """The merger's two products, applied once per merge_size² patches."""
        e, m2 = self.vision_dim, self.spatial_merge_size ** 2
        return (e * m2) ** 2 + e * m2 * self.hidden_size

    def vision_other_params(self) -> int:
        e, r, m2 = self.vision_dim, self.vision_mlp_ratio, self.spatial_merge_size ** 2
        per_block = 4 * e + 3 * e + e + r * e + e  # 2 LayerNorms (w, b), qkv/proj/fc1/fc2 biases
        return self.vision_depth * per_block + 2 * e + e * m2 + self.hidden_size

    def param_count(self) -> int:
        """Unique parameters, as PyTorch counts them (a tied lm_head shares the embedding)."""
        head = 0 if self.tie_word_embeddings else self.embed_params()
        return (self.llm_gemm_params() + self.llm_other_params() + self.embed_params() + head
                + self.vision_gemm_params() + self.vision_other_params())


_COMMON = {"model_type": "qwen2_vl", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
           "max_position_embeddings": 32768, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
           "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
           "video_token_id": 151656, "use_sliding_window": False}
_VISION = {"depth": 32, "embed_dim": 1280, "hidden_act": "quick_gelu", "mlp_ratio": 4, "num_heads": 16,
           "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}

#: Qwen2-VL-2B/7B(-Instruct) config.json (the fields that shape the model), as published with the checkpoints.
PUBLISHED = {
    "qwen2-vl-2b": {**_COMMON, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                    "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                    "tie_word_embeddings": True, "vision_config": {**_VISION, "hidden_size": 1536}},
    "qwen2-vl-7b": {**_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                    "tie_word_embeddings": False, "vision_config": {**_VISION, "hidden_size": 3584}},
}


def read_model_config(path) -> ModelConfig:
    """A ModelConfig from a checkpoint or artifact directory (config.json), a config.json path or a published name."""
    if isinstance(path, ModelConfig):
        return path
    if str(path) in PUBLISHED:
        return ModelConfig.from_config(PUBLISHED[str(path)], name=str(path))
    p = Path(path)
    cfg_path = p / "config.json" if p.is_dir() else p
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json at {p}; expected a checkpoint directory or one of {sorted(PUBLISHED)}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
    return ModelConfig.from_config(cfg, name=p.name if p.is_dir() else p.parent.name)

"""Choosing the next token from logits: greedy, temperature, top-p; seeded; stop tokens.

Works on torch tensors on any device (the backends hand logits over as torch tensors, ONNX Runtime's through
`torch.from_numpy`), so greedy decoding never copies the vocabulary-sized logits to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_p 1.0 keeps the whole distribution; seed makes sampling reproducible."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple = field(default_factory=tuple)

    def __post_init__(self):
        if not (self.temperature >= 0 and self.temperature < float("inf")):
            raise ValueError("sampling: temperature must be a finite number >= 0 (0 = greedy), got "
                             f"{self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling: top_p must be in (0, 1], got {self.top_p!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probabilities(logits, config: SamplingConfig):
    """(B, V) logits → (B, V) float32 probabilities after temperature and top-p (nucleus) filtering.

    Top-p keeps the most probable tokens, in descending order, up to and including the first one at which the
    cumulative probability reaches `top_p` (so at least one token always stays), then renormalizes.
    """
    import torch

    if config.greedy:
        raise ValueError("sampling: probabilities() needs temperature > 0; temperature 0 is greedy (argmax)")
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly before each token
    sorted_p = torch.where(before < config.top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(dim=-1, keepdim=True)


class Sampler:
    """Stateful next-token chooser: holds the seeded generator, so a run is reproducible from its seed."""

    def __init__(self, config: SamplingConfig = SamplingConfig(), device="cpu"):
        import torch

        self.config = config
        self.generator = None
        if not config.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(config.seed)

    def __call__(self, logits):
        """(B, V) logits → (B,) int64 token ids."""
        import torch

        if logits.dim() != 2:
            raise ValueError(f"sampling: logits must be (batch, vocab), got shape {tuple(logits.shape)}")
        if self.config.greedy:
            return torch.argmax(logits, dim=-1)
        probs = probabilities(logits, self.config)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

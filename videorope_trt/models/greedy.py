"""`greedy_generate`: a small greedy loop over `VideoRopeQwen2VL` (prefill once, then one token per step with
explicit K/V).

The full runtime (chunked prefill, backends, sampling) lives in `videorope_trt.runtime`; this one is the
plain PyTorch loop a demo or a test can read in one screen.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy_generate(model, input_ids, *, attention_mask=None, pixel_values=None, image_grid_thw=None,
                    pixel_values_videos=None, video_grid_thw=None, max_new_tokens: int = 16, eos_token_id=None,
                    fps=None):
    """Greedy decoding; returns the generated ids (B, N), N <= max_new_tokens.

    Rows that reached an end token keep emitting `eos` (the first one given) until every row has ended.
    """
    from videorope_trt import rope

    if max_new_tokens < 1:
        raise ValueError(f"greedy_generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = _eos_ids(model, eos_token_id)
    bp = model.positions(input_ids, image_grid_thw, video_grid_thw, attention_mask, fps=fps)
    embeds = model.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
    device = embeds.device
    mask = attention_mask.to(device)
    logits, past = model.decoder(embeds, torch.as_tensor(bp.positions, device=device), mask)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=device)
    out, length = [], input_ids.shape[1]
    for step in range(max_new_tokens):
        token = logits[:, -1].argmax(-1)
        if eos:
            token = torch.where(done, torch.full_like(token, eos[0]), token)
            done = done | torch.isin(token, torch.tensor(eos, device=device))
        out.append(token)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        pos = rope.decode_positions(model.rope.variant, bp.rope_deltas, [length + step])  # (A, B, 1)
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        logits, past = model.decoder(model.text_model.embed_tokens(token[:, None]), torch.as_tensor(pos, device=device),
                                     mask, past)
    return torch.stack(out, dim=1)


def _eos_ids(model, eos_token_id) -> list:
    if eos_token_id is None:
        eos_token_id = getattr(model.hf.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = model.config.text_config.eos_token_id
    if eos_token_id is None:
        return []
    return [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])]

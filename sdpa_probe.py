import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from triton.testing import do_bench
torch.manual_seed(0)
for layout in ("bhsd", "bshd"):
    if layout == "bhsd":
        q, k, v = (torch.randn(64, 16, 1024, 80, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    else:
        q, k, v = (torch.randn(64, 1024, 16, 80, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    ref = None
    for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([be]):
                out = F.scaled_dot_product_attention(q, k, v)
                ms = do_bench(lambda: F.scaled_dot_product_attention(q, k, v), return_mode="median")
            ref = out if ref is None else ref
            err = float((out.float() - ref.float()).norm() / ref.float().norm())
            flops = 4 * 64 * 16 * 1024 * 1024 * 80
            print(f"{layout} {be.name}: {ms:.3f} ms/call, {flops / ms / 1e9:.0f} TFLOP/s, x64 calls {64 * ms:.1f} ms, rel diff {err:.1e}", flush=True)
        except Exception as e:
            print(layout, be.name, "failed:", str(e)[:200])

"""The RoPE variants the export targets cover (with their parameters), shared by conftest and the target tests."""

VARIANTS = {"m_rope": {}, "videorope": {"delta": 2.0}, "videorope_pp": {}, "vrope": {}, "tad_rope": {}}
LAST_ONLY = {"tad_rope"}  # one variant exports last-position logits, so the targets cover that graph too

"""The RoPE variants the export targets cover (with their parameters), shared by conftest and the target tests."""

VARIANTS = {"m_rope": {}, "videorope": {"delta": 2.0}, "videorope_pp": {}, "vrope": {}, "tad_rope": {}}
ALL_LOGITS = {"tad_rope"}  # one variant exports every position's logits, so the targets cover that graph too
#: (rotary form, parser generation) pairs a target covers: both forms of the opset-20 graphs, the decomposed one of 23
#: (ONNX Runtime runs the plugin node through a Python op either way)
FORMS = (("plugin", "opset20"), ("decomposed", "opset20"), ("decomposed", "opset23"))

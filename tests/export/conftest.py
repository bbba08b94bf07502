"""Shared exports for the export tests. Tracing is the expensive step (~10-20 s per graph on one core), so each
RoPE variant is traced once per parser generation, in the `plugin` form at fp32, and the other forms and fp16 are
derived from it (`derive_export` applies the exporter's own precision and form steps; test_export checks it equals
a direct export)."""

import pytest

from _export_cases import ALL_LOGITS, VARIANTS


@pytest.fixture(scope="session")
def tiny(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="session")
def exports(tiny, tmp_path_factory):
    """exports(variant, form, precision, generation) -> artifact directory, made once per process."""
    from videorope_trt.export.derive import derive_export
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    root = tmp_path_factory.mktemp("exports")
    made = {}

    def get(variant, form="plugin", precision="fp32", generation=None):
        generation = generation or "opset20"
        key = (variant, form, precision, generation)
        if key not in made:
            if key[1:3] == ("plugin", "fp32"):
                graphs = ("vision", "decoder") if variant == "videorope" else ("decoder",)  # vision: variant-free
                cfg = ExportConfig(variant=variant, delta=VARIANTS[variant].get("delta"), graphs=graphs,
                                   logits="all" if variant in ALL_LOGITS else "last", generation=generation)
                export_checkpoint(tiny, root / "-".join(key), cfg)
            else:
                derive_export(get(variant, generation=generation), root / "-".join(key), rotary_form=form,
                              precision=precision)
            made[key] = root / "-".join(key)
        return made[key]

    return get

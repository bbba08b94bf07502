"""Shared fixtures for the model tests: one tiny checkpoint per test session, models loaded once per variant."""

import pytest


@pytest.fixture(scope="session")
def load_tiny(tiny_ckpt):
    """load_tiny(variant, **rope_params) -> model, cached (callers must not modify the model)."""
    from videorope_trt.models import load_model

    cache = {}

    def load(variant=None, **rope_params):
        key = (variant, tuple(sorted(rope_params.items())))
        if key not in cache:
            cache[key] = load_model(tiny_ckpt, variant=variant, rope_params=rope_params or None)
        return cache[key]

    return load

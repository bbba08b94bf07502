"""Sampling against distributions computed by hand (numpy, float64)."""

import numpy as np
import pytest
import torch

from videorope_trt.runtime.sampling import Sampler, SamplingConfig, probabilities

LOGITS = np.array([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 3.0, 0.1, 0.2, 2.9]])


def _by_hand(logits, temperature, top_p):
    """Row by row: softmax(logits / T), then keep tokens in descending order until the mass reaches top_p."""
    out = np.zeros_like(logits)
    for r, row in enumerate(logits):
        p = np.exp(row / temperature - np.max(row / temperature))
        p /= p.sum()
        mass = 0.0
        for i in np.argsort(-p, kind="stable"):
            if mass >= top_p:
                break
            out[r, i] = p[i]
            mass += p[i]
        out[r] /= out[r].sum()
    return out


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8), (0.5, 0.6), (2.0, 0.3)])
def test_probabilities_match_hand_computation(temperature, top_p):
    got = probabilities(torch.tensor(LOGITS, dtype=torch.float32), SamplingConfig(temperature, top_p)).numpy()
    np.testing.assert_allclose(got, _by_hand(LOGITS, temperature, top_p), atol=1e-6)


def test_top_p_keeps_exactly_the_nucleus():
    # probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps the first two (0.5 < 0.6, 0.8 >= 0.6), renormalized
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    got = probabilities(logits, SamplingConfig(1.0, 0.6)).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.625, 0.375]], atol=1e-6)
    # top_p 0.5 keeps only the first (its mass reaches 0.5 exactly)
    got = probabilities(logits, SamplingConfig(1.0, 0.5)).numpy()
    np.testing.assert_allclose(got, [[0.0, 1.0, 0.0]], atol=1e-6)


def test_greedy_is_argmax():
    assert Sampler()(torch.tensor(LOGITS)).tolist() == [0, 1]


def test_seeded_sampling_is_reproducible_and_seed_matters():
    logits = torch.zeros(4, 50)
    a = [Sampler(SamplingConfig(1.0, 0.9, seed=7))(logits).tolist() for _ in range(3)]
    assert a[0] == a[1] == a[2]
    s = Sampler(SamplingConfig(1.0, 0.9, seed=7))
    seq1 = [s(logits).tolist() for _ in range(5)]
    s = Sampler(SamplingConfig(1.0, 0.9, seed=7))
    assert [s(logits).tolist() for _ in range(5)] == seq1
    s = Sampler(SamplingConfig(1.0, 0.9, seed=8))
    assert [s(logits).tolist() for _ in range(5)] != seq1


def test_sample_frequencies_follow_the_filtered_distribution():
    n = 20000
    logits = torch.tensor(LOGITS[:1], dtype=torch.float32).expand(n, -1)
    tokens = Sampler(SamplingConfig(0.7, 0.8, seed=3))(logits).numpy()
    freq = np.bincount(tokens, minlength=5) / n
    expected = _by_hand(LOGITS[:1], 0.7, 0.8)[0]
    np.testing.assert_allclose(freq, expected, atol=0.015)
    assert freq[expected == 0].sum() == 0  # filtered tokens are never drawn


@pytest.mark.parametrize("kwargs,match", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                          ({"top_p": 1.5}, "top_p")])
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)

"""Suite-wide settings. With `pytest -n 2` each worker gets one core: one torch thread per worker avoids
oversubscription, which slows the tiny models' small matmuls by an order of magnitude."""


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)

"""Shared test setup: one torch thread per worker (the suite runs on 2 cores with 2 workers)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A fresh seeded generator."""
    return torch.Generator().manual_seed(1234)

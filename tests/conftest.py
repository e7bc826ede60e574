"""Shared test setup: one torch thread per worker (the suite runs on 2 cores with 2 workers)."""

import os

import pytest
import torch

torch.set_num_threads(1)
# The app catches an exception escaping a page with a readable message (never a traceback); in the
# tests it re-raises it too, so a page bug fails the test that hit it (app/state.py, page_failed).
os.environ.setdefault("GEOFLOW_STRICT_PAGES", "1")


@pytest.fixture
def gen():
    """A fresh seeded generator."""
    return torch.Generator().manual_seed(1234)

"""Test options (--slow), hypothesis profiles and shared fixtures."""

import os

import numpy as np
import pytest
from hypothesis import settings
from reference import LENET_C3_INPUTS

settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True)
settings.register_profile("slow", max_examples=3000, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the slow tests and more property-based examples")


def pytest_configure(config):
    if config.getoption("--slow"):
        settings.load_profile("slow")
    elif os.environ.get("CI"):
        settings.load_profile("ci")
    else:
        settings.load_profile("dev")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lenet_table():
    t = np.zeros((6, 16), dtype=bool)
    for j, ins in enumerate(LENET_C3_INPUTS):
        t[list(ins), j] = True
    return t


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

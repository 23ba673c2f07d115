"""Fixtures of the Hub tests: a tiny trained-format model folder and the model repository built from it."""

import pytest
from release_scripts import publishing

from pipeline_testing import save_tiny_model_repo


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny SG-DETR with its tiny InternVideo2 encoder in ``encoder/``."""
    return save_tiny_model_repo(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def built_model_repo(tiny_model_dir, tmp_path_factory):
    """The complete model repository ``scripts/push_to_hub.py --what model`` would upload."""
    return publishing.build_model_repo(
        tiny_model_dir, tmp_path_factory.mktemp("build") / "model", repo_id="me/tiny"
    )

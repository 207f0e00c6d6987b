"""Fixtures shared by the test files."""

from pathlib import Path

import pytest
import torch

from vtok_lit.data.motionshapes import MotionShapesConfig, generate_motionshapes

TINY_CORPUS = MotionShapesConfig(num_train=8, num_val=4, num_frames=16, image_size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of a MotionShapes corpus generated once per session with ``TINY_CORPUS``.

    Its folder holds ``clips/``, ``manifest.jsonl`` and ``corpus.json``; treat it as read-only.
    """
    return generate_motionshapes(tmp_path_factory.mktemp("motionshapes"), TINY_CORPUS, processes=1)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread and, on a busy machine, lose a lot to it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

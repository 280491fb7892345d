import json
import os
import sys
from pathlib import Path

import pytest

# Keep TensorFlow quiet and deterministic wherever a test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).parent / "fixtures" / "models"


def manifest() -> dict:
    with open(FIXTURES / "manifest.json") as handle:
        return json.load(handle)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES

"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TALKPLAY_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TALKPLAY_SHARED_DATA", REPO.parent / "shared" / "data"))
CPCD_FILE = SHARED_DATA / "cpcd" / "cpcd_v1.dialogs.dev.train.jsonl"
TPD2_DIR = SHARED_DATA / "talkplaydata2"


@pytest.fixture
def cpcd_file() -> Path:
    if not CPCD_FILE.exists():
        pytest.skip(f"CPCD data not found at {CPCD_FILE} (set TALKPLAY_SHARED_DATA)")
    return CPCD_FILE


@pytest.fixture
def tpd2_dir() -> Path:
    if not TPD2_DIR.exists():
        pytest.skip(f"TalkPlayData 2 sessions not found at {TPD2_DIR} (set TALKPLAY_SHARED_DATA)")
    return TPD2_DIR

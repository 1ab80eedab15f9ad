"""Helpers shared by several test modules."""

from __future__ import annotations

import shutil

import torch


def compile_unavailable() -> str | None:
    """Why torch.compile cannot run here, or None when it can (a reason for pytest.skip)."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "torch.compile's CPU backend needs a C++ compiler"
    return None

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


def toc_pages(toc: dict) -> list[str]:
    """Every page of a Jupyter Book table of contents, in reading order: the root, then each
    `file:` under `parts:`, `chapters:` and `sections:`, a chapter before its sections."""
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk([{key: toc[key]} for key in ("parts", "chapters") if key in toc])
    return pages

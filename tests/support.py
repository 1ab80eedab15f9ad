"""Helpers shared by several test modules."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode


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


def damage_file(path: Path, how: str) -> None:
    """Cut the file to half ("truncate"), flip its middle byte ("flip"), empty it ("empty"),
    delete it ("delete"), or replace it with the text ``how``."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()
    else:
        path.write_text(how)


# ----- host-device synchronisation (tests/test_syncs.py, tests/test_train_syncs.py) -----

# Tensor methods and torch functions that hand a value to the host, and so wait for the device.
READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "any",
    "all",
    "nonzero",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
}


def blocking_copy_to_host(name, args, kwargs) -> bool:
    """``x.to(...)`` or ``host.copy_(x)`` that moves data off a device onto the host and waits.

    On a CPU run every tensor is on the host: a ``to`` whose target is spelled "cpu" counts (on a
    GPU it would still be a copy to the host); a tensor's own ``.device`` does not (it follows the
    data). Off the CPU (the meta runs below) any blocking copy to the host counts.
    """
    if kwargs.get("non_blocking") or any(a is True for a in args[1:]):
        return False
    if name == "copy_":  # dst.copy_(src)
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    source = args[0]
    targets = [
        a.device if isinstance(a, torch.Tensor) else torch.device(a)
        for a in (*args[1:], kwargs.get("device"))
        if isinstance(a, (str, torch.device, torch.Tensor))
    ]
    spelled = any(isinstance(a, str) for a in (*args[1:], kwargs.get("device")))
    return any(d.type == "cpu" and (spelled or source.device.type != "cpu") for d in targets)


class SyncCounter(TorchFunctionMode):
    """Counts, by name, the calls that would make the host wait for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or (name in ("to", "copy_") and blocking_copy_to_host(name, args, kwargs)):
            self.calls[name] += 1
        return func(*args, **kwargs)

"""What every benchmark shares: the run's metadata, alternating A/B timing, the diffusers twin of a
`UNetConfig`, and the JSON and table output.

Each benchmark is one command that prints a table and writes one JSON file under bench/results/
holding `run_metadata()` (date, machine, versions, load average), its settings and the raw timing
samples, so the book's Performance page can show the numbers without anyone typing them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PACKAGES = ("torch", "diffusers", "ddpm", "numpy", "scipy", "scikit-learn")
# Parameter counts of our network and its diffusers twin may differ by at most this fraction.
PARAM_TOLERANCE = 0.05


# ----- metadata -----


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        # OpenMP's barrier waits spin by default; on a busy machine PASSIVE avoids stalls.
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions by distribution name; "ddpm" is the imported package's own version (its
    distribution is named ddpm-book, and a checkout on the path is not installed at all)."""
    import ddpm

    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = ddpm.__version__ if name == "ddpm" else metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the (shared) machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_metadata(
    benchmark: str, argv: Sequence[str] | None, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The header of every results file; `finish` adds the closing load average and duration.

    argv: the command's arguments (None: this process's command line).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    return {
        "benchmark": benchmark,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m", f"bench.{benchmark}", *argv]),
        "machine": machine_info(),
        "versions": versions(),
        "load_average_start": load_average(),
        "settings": dict(settings),
        "_started": time.perf_counter(),
    }


def finish(result: dict[str, Any]) -> dict[str, Any]:
    result["load_average_end"] = load_average()
    result["wall_seconds"] = round(time.perf_counter() - result.pop("_started"), 1)
    return result


# ----- timing -----


class Summary(NamedTuple):
    """Robust statistics of timing samples, in seconds."""

    median: float
    q1: float
    q3: float
    min: float
    n: int


def summarize(samples: Sequence[float]) -> Summary:
    if len(samples) == 1:
        (x,) = samples
        return Summary(x, x, x, x, 1)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Summary(statistics.median(samples), q1, q3, min(samples), len(samples))


class Timings(NamedTuple):
    """Seconds per call, name -> [repeats], in round order (sample r of each name from round r)."""

    wall: dict[str, list[float]]  # wall-clock time: what a user waits
    # CPU time of the whole process (all threads): on a shared machine it leaves out the time the
    # process waited for a core, so it is steadier than wall time when the machine is busy; with
    # several threads it also counts the cores' time spent waiting for each other.
    cpu: dict[str, list[float]]


def alternate(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    """Wall-clock and CPU seconds per call of each function, measured in alternation.

    Every function is called `warmup` times first (untimed), then `repeats` rounds time one call of
    each; the order within a round is rotated from round to round, so a slow drift in the machine's
    load (this machine is shared) falls on all candidates alike rather than on whichever runs last.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return Timings(wall, cpu)


def profile_ops(fn: Callable[[], object], calls: int, top: int = 15) -> dict[str, Any]:
    """torch.profiler's view of `calls` calls of fn on the CPU: the `top` operators by self time,
    and the self time summed into coarse kinds (convolution, normalisation, ...), in ms per call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [
        {
            "op": e.key,
            "self_ms_per_call": e.self_cpu_time_total / 1e3 / calls,
            "share": e.self_cpu_time_total / total,
            "count_per_call": e.count / calls,
        }
        for e in events[:top]
    ]
    kinds: dict[str, float] = {}
    for e in events:
        kind = op_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total / 1e3 / calls
    return {
        "calls": calls,
        "self_ms_per_call": total / 1e3 / calls,
        "top_ops": ops,
        "by_kind_ms_per_call": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "op_launches_per_call": sum(e.count for e in events) / calls,
    }


OP_KINDS = (  # (kind, pattern of the operator's base name), the first match wins
    ("convolution", r"conv|mkldnn"),
    ("normalisation", r"group_norm|layer_norm|batch_norm"),
    ("attention", r"attention|softmax|bmm"),
    ("matmul", r"^(addmm|mm|linear|matmul)"),
    ("optimizer", r"^foreach|adam"),
    ("interpolation", r"upsample"),
    (
        "copies, views and fills",
        r"^(copy|clone|cat|stack|contiguous|reshape|view|transpose|permute|empty|as_strided"
        r"|expand|unbind|split|chunk|to|to_copy|t|unsqueeze|squeeze|slice|select|index|detach"
        r"|zeros|zero|ones|full|fill|resize|set|lift)(_|$)",
    ),
    ("random numbers", r"rand|normal|bernoulli"),
)


def op_kind(name: str) -> str:
    """The coarse kind of an operator name such as 'aten::native_group_norm' (see OP_KINDS);
    'elementwise and other' for the rest."""
    base = name.split("::")[-1].lstrip("_")
    for kind, pattern in OP_KINDS:
        if re.search(pattern, base):
            return kind
    return "elementwise and other"


# ----- the diffusers twin of our U-Net -----


@dataclass(frozen=True)
class Case:
    """One measured setting: a U-Net architecture (a `ddpm.unet.UNetConfig`) at a batch size."""

    name: str
    config: Any
    batch: int


def diffusers_unet(config, **overrides):
    """A `diffusers.UNet2DModel` with the architecture of the `ddpm.unet.UNetConfig` `config`.

    Same widths per resolution, residual blocks per resolution (one more on the way up), single-head
    attention at the same resolutions and in the middle, GroupNorm of 32 groups with eps 1e-6,
    dropout, and the DDPM CIFAR-10 embedding settings of diffusers' `google/ddpm-cifar10-32`. The
    parameter counts match exactly; check with `check_same_size`. Raises ValueError for configs
    diffusers cannot express (a channel count that is not a multiple of 32, a learned variance).
    """
    from diffusers import UNet2DModel

    from ddpm.unet import MAX_GROUPS

    widths = tuple(config.base_channels * m for m in config.channel_mult)
    if any(w % MAX_GROUPS for w in widths) or config.learn_sigma:
        raise ValueError(
            f"diffusers' UNet2DModel uses one group count ({MAX_GROUPS}) for every GroupNorm; "
            f"every width must be a multiple of it and learn_sigma off, got widths {widths}"
        )
    attn = set(config.attn_resolutions)
    down = tuple("AttnDownBlock2D" if r in attn else "DownBlock2D" for r in config.resolutions)
    up = tuple("AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(config.resolutions))
    settings = dict(
        sample_size=config.image_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=widths,
        layers_per_block=config.num_res_blocks,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=None,  # one head as wide as the block, as in the paper
        norm_num_groups=MAX_GROUPS,
        norm_eps=1e-6,
        dropout=config.dropout,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
    )
    settings.update(overrides)
    return UNet2DModel(**settings)


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_same_size(ours, theirs, tolerance: float = PARAM_TOLERANCE) -> dict[str, int]:
    """Parameter counts of two models; AssertionError when they differ by more than `tolerance`."""
    a, b = param_count(ours), param_count(theirs)
    if abs(a - b) > tolerance * max(a, b):
        raise AssertionError(f"parameter counts differ by more than {tolerance:.0%}: {a} vs {b}")
    return {"ours": a, "diffusers": b}


# ----- output -----


def timing_parser(
    description: str, default_output: str, repeats: int, warmup: int, profiled: str
) -> argparse.ArgumentParser:
    """`base_parser` with --repeats, --warmup and --profile (which profiles `profiled`)."""
    parser = base_parser(description, default_output)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (>= 5)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    parser.add_argument(
        "--profile", action="store_true", help=f"also record torch.profiler's view of {profiled}"
    )
    return parser


def base_parser(description: str, default_output: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes and few repeats: checks the script runs"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all CPUs)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / default_output,
        help=f"JSON results file (default: bench/results/{default_output})",
    )
    return parser


def set_threads(threads: int | None) -> int:
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def _clean(value: Any) -> Any:
    """JSON-ready: NamedTuples become dicts, non-finite floats None, tuples lists."""
    if hasattr(value, "_asdict"):
        return {k: _clean(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, result: Mapping[str, Any], quiet: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(result), indent=2) + "\n")
    if not quiet:
        print(f"wrote {path}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table; floats with 4 significant digits."""

    def cell(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return "-" if x is None else str(x)

    cells = [[cell(x) for x in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))

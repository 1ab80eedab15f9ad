"""Faults a user meets, as a table (tests/faults_table.py) and as stories: bad command lines,
damaged checkpoints and data, output paths in the way, a full disk, a read-only or unreadable
location, memory running out, stop signals sent to real processes, a shared or busy run
directory, a diverging run, a checkpoint whose data or manifest changed. Each runs the real
command and checks its exit status, its message and the files before and after."""

import builtins
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from faults_table import ROWS, STOP_ROWS, TINY, Case, Stop

from ddpm import checkpoint as ckpt
from ddpm.cli import main
from ddpm.cli.failures import USAGE
from ddpm.trained import load_trained
from ddpm.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(out: Path, *extra: str) -> int:
    return main(["train", *TINY.split(), "--out-dir", str(out), *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its contents."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error(capsys) -> str:
    return capsys.readouterr().err


# ----- the table -----


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs that the rows copy: one on the digits, one on 2-D points (two steps each)."""
    folder = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    assert _train(folder / "run", "--steps", "2", "--ckpt-every", "2") == 0
    toy = ["--data", "toy:eight_gaussians", "--steps", "2", "--timesteps", "40"]
    assert (
        main(["train", *toy, "--device", "cpu", "--no-progress", "--out-dir", str(folder / "toy")])
        == 0
    )
    return folder


def _place(case_argv: str, tmp: Path) -> list[str]:
    return case_argv.format(run=tmp / "run", toy=tmp / "toy", tmp=tmp).split()


def _refuse(monkeypatch, under: Path, code: int, writes: bool, reads: bool) -> None:
    """The file system refuses, with `code`, to create or write (`writes`) or to open for
    reading (`reads`) anything under `under`; other paths are untouched."""

    def refused(path) -> bool:
        try:
            return Path(os.fspath(path)).absolute().is_relative_to(under)
        except TypeError:  # a file descriptor
            return False

    def fail(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def open_(file, mode="r", *args, **kwargs):
        writing = any(c in mode for c in "wax+")
        if refused(file) and (writes if writing else reads):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if refused(path) and (writes if writing else reads) and not os.path.isdir(path):
            fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if writes and refused(path):
            fail(path)
        return real_mkdir(path, *args, **kwargs)

    for module, name, value in [
        (builtins, "open", open_),
        (io, "open", open_),
        (os, "open", os_open),
        (os, "mkdir", mkdir),
    ]:
        monkeypatch.setattr(module, name, value)


class _FullFile:
    """An open file on a full disk: opening worked, writing does not."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_full(monkeypatch, under: Path) -> None:
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and Path(file).absolute().is_relative_to(
            under
        )
        return _FullFile(f) if inside and any(c in mode for c in "wax+") else f

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def _raise_in_network(monkeypatch, error: BaseException) -> None:
    def forward(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(UNet, "forward", forward)


def _cuda_oom() -> BaseException:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return oom("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 8 GiB total)")


def _raise_while_loading(monkeypatch, error: BaseException) -> None:
    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt, "load_weights", load)


FAULTS = {
    "disk full": lambda mp, tmp: _disk_full(mp, tmp),
    "read-only": lambda mp, tmp: _refuse(mp, tmp, errno.EROFS, writes=True, reads=False),
    "no permission": lambda mp, tmp: _refuse(mp, tmp, errno.EACCES, writes=True, reads=False),
    "unreadable": lambda mp, tmp: _refuse(mp, tmp / "run", errno.EACCES, writes=True, reads=True),
    "memory": lambda mp, tmp: _raise_in_network(mp, MemoryError()),
    "accelerator memory": lambda mp, tmp: _raise_in_network(mp, _cuda_oom()),
    "memory while loading": lambda mp, tmp: _raise_while_loading(mp, MemoryError()),
}


@pytest.mark.parametrize("case", ROWS, ids=str)
def test_a_bad_input_or_fault_gets_its_status_its_message_and_harms_no_file(
    case: Case, runs, tmp_path, monkeypatch, capsys
):
    for name in ("run", "toy"):
        shutil.copytree(runs / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the default run, runs/digits, is not there: the shipped model
    if case.setup:
        case.setup(tmp_path)
    before = {k: v for k, v in _snapshot(tmp_path).items() if Path(k).name != ckpt.LOCK}
    if case.fault:
        FAULTS[case.fault](monkeypatch, tmp_path)
    capsys.readouterr()
    try:
        status = main(_place(case.argv, tmp_path))
    except SystemExit as stopped:
        status = stopped.code
    monkeypatch.undo()
    err = capsys.readouterr().err
    message = case.message.format(tmp=tmp_path, run=tmp_path / "run")
    assert status == case.status, err
    lines = err.strip().splitlines()
    if status == USAGE:
        # argparse's own line; an unknown option is followed by the valid ones
        assert any(x.startswith("ddpm") and ": error: " in x and message in x for x in lines), err
    else:
        assert len(lines) == 1 and lines[0].startswith("ddpm ") and message in lines[0], err
    assert "Traceback" not in err
    # The run's lock file, rewritten by every run that takes the directory, may stay.
    after = {k: v for k, v in _snapshot(tmp_path).items() if Path(k).name != ckpt.LOCK}
    new = set(after) - set(before)
    assert new <= set(case.writes), f"wrote {sorted(new)}"
    changed = {k for k in before if after.get(k) != before[k] and k not in case.writes}
    assert not changed, f"changed or removed {sorted(changed)}"


def test_the_table_holds_every_kind_of_fault_once():
    names = [case.name for case in ROWS] + [str(stop) for stop in STOP_ROWS]
    assert len(names) == len(set(names))
    assert len(names) >= 138


# ----- stop signals, sent to real processes -----

COMMAND_LINES = {
    "sample": "sample {run} --num 12 --batch-size 4 --no-progress --out {tmp}/s.png",
    "bpd": "bpd {run} --num 12 --batch-size 4 --no-progress --out {tmp}/b.json",
    "train": "train --resume --steps 100000 --log-every 1 --ckpt-every 100000 "
    "--no-progress --out-dir {run}",
}


def _hold_after(batches: int, ready: Path):
    """Replace the batch function of the commands so that, once `batches` calls have
    finished, the next one says so in `ready` and waits for the signal."""
    from ddpm.cli import commands

    calls = []

    def hold(real):
        def held(*args, **kwargs):
            if len(calls) == batches:
                ready.write_text("ready")
                time.sleep(120)
            calls.append(1)
            return real(*args, **kwargs)

        return held

    commands.sample = hold(commands.sample)
    commands.calc_bpd_loop = hold(commands.calc_bpd_loop)


def _start(stop: Stop, tmp: Path) -> tuple[int, Path]:
    """A forked process running the command (torch already loaded: no start-up cost); the
    file that says it is ready for the signal."""
    ready = tmp / "ready" if stop.command != "train" else tmp / "run" / "log.jsonl"
    argv = _place(COMMAND_LINES[stop.command], tmp)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            sys.stdout = open(tmp / "stdout", "w")
            sys.stderr = open(tmp / "stderr", "w")
            torch.set_num_threads(1)
            if stop.command != "train":
                _hold_after(stop.batches, ready)
            code = main(argv)
        except BaseException:
            traceback.print_exc(file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid, ready


def _wait_until(done, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _exit_code(pid: int, seconds: float = 60) -> int:
    """The exit status of the child `pid`, killed (and the test failed) if it does not end."""
    result = []

    def ended() -> bool:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited:
            result.append(os.waitstatus_to_exitcode(status))
        return bool(result)

    try:
        _wait_until(ended, "the command did not stop", seconds)
    finally:
        if not result:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return result[0]


@pytest.mark.parametrize("stop", STOP_ROWS, ids=str)
def test_a_stop_signal_keeps_the_finished_work(stop: Stop, runs, tmp_path):
    shutil.copytree(runs / "run", tmp_path / "run")
    records = (tmp_path / "run" / "log.jsonl").read_text().count("\n")
    pid, ready = _start(stop, tmp_path)
    if stop.command == "train":  # once it has logged a step of its own
        _wait_until(lambda: ready.read_text().count("\n") > records, "no step was logged")
    else:
        _wait_until(ready.exists, "the command never got going")
    os.kill(pid, stop.signum)
    status = _exit_code(pid)
    err = (tmp_path / "stderr").read_text()
    assert status == 128 + stop.signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    name = signal.Signals(stop.signum).name
    if stop.command == "train":
        saved = ckpt.read_checkpoint(tmp_path / "run")
        assert f"ddpm train: {name} at step {saved.step}; its checkpoint is in" in lines[0]
        assert lines[0].endswith("continue with --resume")
        records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == saved.step > 2  # the step it stopped at is saved, logged
        return
    if stop.batches == 0:
        assert lines[0] == f"ddpm {stop.command}: stopped by {name}; no batch of " + (
            "samples had finished: nothing written"
            if stop.command == "sample"
            else "examples had finished: nothing written"
        )
        assert not {"s.png", "s.npy", "b.json"} & {p.name for p in tmp_path.iterdir()}
    elif stop.command == "sample":
        out = tmp_path / "s.png"
        assert lines[0] == (
            f"ddpm sample: stopped by {name}; the 4 of 12 samples finished are in {out} and "
            f"{out.with_suffix('.npy')}"
        )
        assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)
        assert out.read_bytes().startswith(b"\x89PNG")
    else:
        out = tmp_path / "b.json"
        assert lines[0] == (
            f"ddpm bpd: stopped by {name}; the bound of the 4 of 12 examples finished is in {out}"
        )
        result = json.loads(out.read_text())
        assert (result["num_examples"], result["num_requested"]) == (4, 12)
        totals = result["total_bpd_per_example"]
        assert len(totals) == 4 and result["total_bpd"] == pytest.approx(sum(totals) / 4)


# ----- a run directory is the run's alone -----


def test_a_fresh_run_refuses_foreign_files_and_leaves_them_as_they_were(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "step-000002").mkdir()
    (tmp_path / "step-000002" / "figure.png").write_bytes(b"png")
    before = _snapshot(tmp_path)
    assert _train(tmp_path, "--steps", "2") == 1
    assert "holds files this run did not write (notes.txt, step-000002)" in _error(capsys)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step-000002"]

    # Told to share the directory, it trains beside them: at step 2 it saves into the taken
    # step folder, whose own file it keeps.
    assert _train(tmp_path, "--steps", "2", "--share-dir") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "step-000002" / "figure.png").read_bytes() == b"png"


def test_a_new_checkpoint_removes_only_what_the_old_one_wrote(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "2", "--ckpt-every", "2") == 0
    (tmp_path / "step-000002" / "notes.txt").write_text("mine")
    (tmp_path / "step-000001").mkdir()  # not a folder any save of this run wrote
    assert _train(tmp_path, "--resume", "--steps", "4") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 4
    assert sorted(p.name for p in (tmp_path / "step-000002").iterdir()) == ["notes.txt"]
    assert (tmp_path / "step-000001").is_dir()


def test_a_log_line_cut_off_by_a_kill_is_dropped_on_resume(runs, tmp_path):
    """Unlike a damaged line inside the log (refused, in the table), a last line without its
    newline is what a kill during a write leaves: the resume drops it and carries on."""
    shutil.copytree(runs / "run", tmp_path / "run")
    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    assert (
        main(
            [
                "train",
                "--resume",
                "--steps",
                "4",
                "--no-progress",
                "--out-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4]


def test_a_log_without_a_checkpoint_is_never_overwritten(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "4") == 0
    (tmp_path / ckpt.MANIFEST).unlink()  # as after a hand clean-up, or a kill before step 1
    before = _snapshot(tmp_path)
    assert _train(tmp_path, "--steps", "4") == 1
    assert "holds files this run did not write (log.jsonl, step-000004)" in _error(capsys)
    assert _train(tmp_path, "--steps", "4", "--share-dir") == 1
    assert "log.jsonl exists" in _error(capsys)
    assert _snapshot(tmp_path) == before


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds `run_dir`'s lock until killed."""
    code = (
        "import sys, time; from ddpm.checkpoint import claim_run_dir\n"
        "with claim_run_dir(sys.argv[1], 'holder'):\n"
        "    print('ready', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "ready\n"
    return holder


def test_a_second_run_fails_at_once_naming_the_first_and_a_dead_ones_lock_blocks_nobody(
    tmp_path, capsys
):
    holder = _hold_lock(tmp_path)
    try:
        started = time.perf_counter()
        assert _train(tmp_path, "--steps", "2") == 1
        assert time.perf_counter() - started < 5  # no data loaded, no model built
        message = _error(capsys)
        assert f"in use by another run (pid {holder.pid} on " in message
        assert ": holder)" in message
        assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LOCK]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert (tmp_path / ckpt.LOCK).is_file()
    assert _train(tmp_path, "--steps", "2") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 2


# ----- divergence is not success -----


def test_an_exploding_loss_stops_at_its_step_and_a_resume_may_lower_the_rate(tmp_path, capsys):
    # The loss of step 1 is the untrained network's; the first update that can change a loss
    # is update 1, so with this rate the explosion is seen at step 2.
    assert _train(tmp_path / "fresh", "--steps", "20", "--lr", "1e9", "--warmup-steps", "0") == 1
    message = _error(capsys)
    assert " at step 2 is more than 1000 times the first step's" in message
    assert "before any checkpoint was written; start again with a learning rate below 1e+09" in (
        message
    )
    assert not (tmp_path / "fresh" / ckpt.MANIFEST).exists()
    assert (tmp_path / "fresh" / "log.jsonl").read_text() == ""

    run = tmp_path / "run"
    assert _train(run, "--steps", "4", "--warmup-steps", "0") == 0
    assert _train(run, "--resume", "--steps", "8", "--lr", "1e9") == 1
    message = _error(capsys)
    # Update 5 is the first at 1e9 (NaN or a growth, whichever the arithmetic reaches).
    assert re.search(r"training loss (is nan|\S+) at step 6\b", message)
    assert "last good checkpoint (step 4)" in message
    assert f"ddpm train --out-dir {run} --resume --lr" in message
    assert ckpt.read_checkpoint(run).step == 4

    assert _train(run, "--resume", "--steps", "8", "--lr", "1e-4") == 0
    assert "with lr 0.0001 instead of the checkpoint's 0.0002" in _error(capsys)
    saved = ckpt.read_checkpoint(run)
    assert saved.config["lr"] == 1e-4
    assert saved.state["overrides"] == [{"step": 4, "field": "lr", "from": 2e-4, "to": 1e-4}]
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs == [2e-4, 2e-4, 1e-4, 1e-4]


def _with_nan_weights(run: Path, out: Path) -> None:
    """A copy of the checkpoint in `run` whose weights are all NaN, saved as training saves."""
    saved = ckpt.read_checkpoint(run)
    model = load_trained(run, "model").model
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    optimizer = torch.optim.Adam(model.parameters())
    ckpt.save_checkpoint(
        out,
        saved.step,
        model=model,
        ema=model,
        optimizer=optimizer,
        rng=ckpt.load_rng(saved),
        config=saved.config,
        state=saved.state,
    )


def test_samples_and_bounds_from_nan_weights_are_an_error_and_nothing_is_written(tmp_path, capsys):
    assert _train(tmp_path / "run", "--steps", "2") == 0
    _with_nan_weights(tmp_path / "run", tmp_path / "nan")
    before = _snapshot(tmp_path / "nan")
    out = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "nan"), "--num", "4", "--out", str(out)]) == 1
    message = _error(capsys)
    assert "4 of 4 samples are not finite (NaN or infinite) with the weights of step 2" in message
    assert "weight tensors of the model are not finite" in message
    assert not out.exists() and not out.with_suffix(".npy").exists()
    bpd = ["bpd", str(tmp_path / "nan"), "--num", "2", "--out", str(tmp_path / "b.json")]
    assert main([*bpd, "--no-progress"]) == 1
    assert "2 of 2 per-example bounds are not finite" in _error(capsys)
    assert not (tmp_path / "b.json").exists()
    assert _snapshot(tmp_path / "nan") == before


# ----- a checkpoint knows its data and protects itself -----


def _images(path: Path, seed: int, size: int = 8) -> None:
    rng = np.random.default_rng(seed)
    np.save(path, rng.integers(0, 256, size=(20, size, size), dtype=np.uint8))


def test_resume_and_bpd_refuse_data_that_changed(tmp_path, capsys):
    data, run = tmp_path / "faces.npy", tmp_path / "run"
    _images(data, seed=0)
    assert _train(run, "--data", str(data), "--steps", "2") == 0
    recorded = ckpt.read_checkpoint(run).state["data"]
    assert (recorded["shape"], recorded["num_levels"]) == ([1, 8, 8], 256)
    bpd = ["bpd", str(run), "--num", "2", "--no-progress", "--out", str(tmp_path / "b.json")]

    _images(data, seed=1)  # same shape and levels, other pixels
    assert _train(run, "--data", str(data), "--resume", "--steps", "4") == 1
    message = _error(capsys)
    assert "differ from the data the checkpoint was trained on" in message
    assert f"fingerprint {recorded['fingerprint'][:12]}... -> " in message
    assert main(bpd) == 1
    assert "fingerprint" in _error(capsys)

    _images(data, seed=0, size=6)
    assert main(bpd) == 1
    assert "shape (1, 8, 8) -> (1, 6, 6)" in _error(capsys)
    assert ckpt.read_checkpoint(run).step == 2
    assert not (tmp_path / "b.json").exists()

    _images(data, seed=0)  # the very data again
    assert main(bpd) == 0


def _manifest(run: Path) -> dict:
    return json.loads((run / ckpt.MANIFEST).read_text())


def test_a_hand_edited_manifest_is_refused_and_the_log_kept(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "4", "--ckpt-every", "2") == 0
    manifest = _manifest(tmp_path)
    manifest["step"] = 2  # resuming would cut the log back to step 2
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log = (tmp_path / "log.jsonl").read_text()
    assert _train(tmp_path, "--resume", "--steps", "6") == 1
    message = _error(capsys)
    assert "manifest.json: edited or damaged: its contents no longer match" in message
    assert "it says step 2 but names the folder step-000004" in message
    assert (tmp_path / "log.jsonl").read_text() == log
    assert main(["info", str(tmp_path)]) == 1


def test_a_checkpoint_of_the_first_format_still_loads_and_resumes(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "2") == 0
    manifest = _manifest(tmp_path)
    # What the first format wrote: no checksum of its own, no data fingerprint, no start loss.
    manifest["format"] = "ddpm-checkpoint/1"
    del manifest[ckpt.MANIFEST_SHA256], manifest["state"]["data"]["fingerprint"]
    del manifest["state"]["start_loss"], manifest["state"]["overrides"]
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["info", str(tmp_path)]) == 0
    assert "levels 17, fingerprint not recorded" in capsys.readouterr().out
    assert _train(tmp_path, "--resume", "--steps", "4") == 0
    saved = _manifest(tmp_path)
    assert saved["format"] == ckpt.FORMAT and saved["step"] == 4
    rest = {k: v for k, v in saved.items() if k != ckpt.MANIFEST_SHA256}
    text = json.dumps(rest, indent=2, sort_keys=True) + "\n"
    assert saved[ckpt.MANIFEST_SHA256] == hashlib.sha256(text.encode()).hexdigest()

#!/usr/bin/env python
"""Every full-read command on large models against the floor (h5py reading every dataset once), side by side.

    python bench/bench_big.py MODEL [MODEL ...] [--commands inspect,json,check,snapshot,export,diff]
                              [--repeat 1] [--timeout 600] [--options '--timeout 900']

Build the models with ``bench/make_big_models.py``. Each command runs as a fresh whole process (warm page cache:
the floor runs first and reads the file once); the figures are wall time, MB/s of the file's size, peak RSS of the
whole process tree (the command and its forked reading child, summed, sampled every 20 ms from /proc) and the
ratio of the time to the floor's, and the CPU seconds of the process tree with their ratio to the floor's CPU (less
sensitive to other work on a shared machine). The floor and the commands run interleaved, round after round
(``--repeat``); rows show medians. The range of the load average over the rounds is printed with each row.
``diff`` compares the file with itself (two opens of one file) against twice the floor. The commands run as
``python -m lstm_inspect``, which takes the package from the current directory first: run from the checkout you
mean to measure.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

FLOOR = r"""
import sys, zipfile, struct, io, os
import h5py
path = sys.argv[1]

class Window(io.RawIOBase):
    # the stored model.weights.h5 of a .keras archive, read in place (what any in-place reader has to do)
    def __init__(self, fd, offset, size): self.fd, self.offset, self.size, self.pos = fd, offset, size, 0
    def readable(self): return True
    def seekable(self): return True
    def tell(self): return self.pos
    def seek(self, pos, whence=0):
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + pos
        return self.pos
    def readinto(self, buf):
        view = memoryview(buf).cast("B")[: max(0, self.size - self.pos)]
        n = os.preadv(self.fd, [view], self.offset + self.pos)
        self.pos += n
        return n

if path.endswith(".keras"):
    archive = zipfile.ZipFile(path)
    info = archive.getinfo("model.weights.h5")
    fd = os.open(path, os.O_RDONLY)
    head = os.pread(fd, 30, info.header_offset)
    offset = info.header_offset + 30 + sum(struct.unpack("<HH", head[26:30]))
    source = Window(fd, offset, info.file_size)
else:
    source = path
sink = open(sys.argv[2], "wb") if len(sys.argv) > 2 else None  # the write floor: every value written once too
total = 0
def visit(name, node):
    global total
    if isinstance(node, h5py.Dataset):
        value = node[()]   # read once, then released
        total += value.nbytes
        if sink is not None:
            sink.write(value.tobytes())
with h5py.File(source, "r") as f:
    f.visititems(visit)
if sink is not None:
    sink.close()
print(total, file=sys.stderr)
"""


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], timeout: float) -> tuple[float, int, int]:
    """(wall seconds, peak tree RSS bytes, exit code); `run.cpu` holds the CPU seconds of the last run."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cpu = cpu_seconds()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        if time.perf_counter() - start > timeout:
            process.kill()
        time.sleep(0.02)  # the /proc scan itself costs CPU on a machine with many processes
    seconds = time.perf_counter() - start
    run.cpu = cpu_seconds() - cpu  # type: ignore[attr-defined]
    error = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
    if process.returncode not in (0, 1):
        print(f"    ({' '.join(command[2:])}: exit {process.returncode}: {error[-200:]})", file=sys.stderr)
    return seconds, peak, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--commands", default="inspect,json,check,snapshot,export,diff",
                        help="any of inspect,json,check,snapshot,export,export-st,diff,report, and write-floor (the floor "
                             "that also writes every value to one file: what export cannot do with less)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (floor, then every command); medians shown")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--options", default="", help="extra group options, e.g. '--max-memory 8G'")
    args = parser.parse_args()
    py = [sys.executable, "-m", "lstm_inspect", *args.options.split()]
    with tempfile.TemporaryDirectory(prefix="bench_big_") as out_dir:
        measure_all(args, py, out_dir)


def measure_all(args: argparse.Namespace, py: list[str], out_dir: str) -> None:
    """Each round runs the floor, then every command, so each ratio compares runs minutes apart at most; a row shows
    the medians over the rounds (wall seconds, its ratio to the same round's floor, CPU seconds of the process tree
    and its ratio to the floor's CPU) and the largest peak RSS."""
    print(TABLE_HEADER)
    for model in args.models:
        size = os.path.getsize(model)
        name = os.path.basename(model)
        with open(model, "rb") as handle:  # warm the page cache: every row measures reading from memory
            while handle.read(64 << 20):
                pass
        commands = {
            "inspect": py + ["inspect", model],
            "json": py + ["inspect", "--json", model],
            "check": py + ["check", "--format", "json", model],
            "snapshot": py + ["snapshot", model, "-o", os.path.join(out_dir, "snap.json")],
            "export": py + ["export", model, "-o", os.path.join(out_dir, "gates.npz")],
            "export-st": py + ["export", model, "-o", os.path.join(out_dir, "gates.safetensors")],
            "diff": py + ["diff", model, model],
            "report": py + ["report", model, "-o", os.path.join(out_dir, "report.html")],
            "write-floor": [sys.executable, "-c", FLOOR, model, os.path.join(out_dir, "floor.bin")],
        }
        rows = [("floor (h5py, every dataset once)", [sys.executable, "-c", FLOOR, model])]
        rows += [(f"`{key}`", commands[key]) for key in args.commands.split(",")]
        measure_rows(name, size, rows, args.repeat, args.timeout, out_dir)


TABLE_HEADER = ("| file | command | seconds | MB/s | × floor | CPU s | CPU × floor | peak MiB (tree) | exit | load |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


def measure_rows(name: str, size: int, rows: list[tuple], repeat: int, timeout: float, out_dir: str) -> None:
    """Run `rows` — (label, command) or (label, command, extra environment), the floor first — interleaved, round
    after round, and print one `TABLE_HEADER` row per label: medians over the rounds (wall seconds, its ratio to the
    same round's floor, CPU seconds of the process tree and its ratio to the floor's CPU), the largest peak RSS, the
    exit codes and the range of the load average. A label starting with `diff` reads the file twice: its ratios are
    to twice the floor. Files the commands wrote into `out_dir` are removed after each."""
    results: dict[str, list[tuple[float, float, int, int, float]]] = {row[0]: [] for row in rows}
    for _ in range(repeat):
        for label, command, *env in rows:
            saved = dict(os.environ)
            os.environ.update(env[0] if env else {})
            try:
                seconds, peak, code = run(command, timeout)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            results[label].append((seconds, run.cpu, peak, code, os.getloadavg()[0]))  # type: ignore[attr-defined]
            for leftover in os.listdir(out_dir):
                os.remove(os.path.join(out_dir, leftover))
    floors = results[rows[0][0]]
    for label, runs in results.items():
        factor = 2 if label.startswith("`diff`") else 1  # diff reads the file twice
        wall = _median([r[0] for r in runs])
        ratio = _median([r[0] / (factor * f[0]) for r, f in zip(runs, floors)])
        cpu = _median([r[1] for r in runs])
        cpu_ratio = _median([r[1] / (factor * f[1]) for r, f in zip(runs, floors)])
        loads = [r[4] for r in runs]
        print(f"| {name} | {label} | {wall:.2f} | {factor * size / 1e6 / wall:.0f} | {ratio:.2f} | {cpu:.2f} | "
              f"{cpu_ratio:.2f} | {max(r[2] for r in runs) / 2**20:.0f} | "
              f"{','.join(sorted({str(r[3]) for r in runs}))} | {min(loads):.1f}-{max(loads):.1f} |", flush=True)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

if __name__ == "__main__":
    main()

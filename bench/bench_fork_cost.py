#!/usr/bin/env python
"""Where an isolated file's cost goes in `check` over many files (issue 14; not a test).

Usage: python bench/bench_fork_cost.py [--files 200]

Fills a directory like bench_check_jobs.py, then runs `check --format json` on it once in a fresh process whose
isolation layer is instrumented (wrapped, not changed): each child records its CPU time and minor page faults
when it starts (after Python's own after-fork work), when its reading starts (after its set-up), when the check
returns and when its answer is encoded; the parent records the CPU of each fork and each child's total CPU and
faults from wait4 (which includes tearing the child down). Then, in the same process, the floor: children that
only fork and `os._exit` at once, forked by `os.fork` and by libc's fork without Python's after-fork work.
Medians per file; the load average is printed with them (CPU times grow with it, page faults do not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _minflt() -> int:
    with open("/proc/self/stat", "rb") as handle:
        stat = handle.read()
    return int(stat[stat.rindex(b")") + 2:].split()[7])


def _mark() -> tuple[float, int]:
    return time.process_time() * 1000, _minflt()


def inner(directory: str, records: str) -> None:
    """Run the CLI's check on `directory` with the isolation layer wrapped; print the parent's figures as JSON."""
    import ctypes
    import resource

    from lstm_inspect import isolation

    real_child, real_fork, real_waitpid = isolation._child, os.fork, os.waitpid
    forks: list[float] = []
    reaped: list[tuple[float, int]] = []

    def child(func, args, max_memory):
        stages = {"start": _mark()}

        def timed(*inner_args):
            stages["read"] = _mark()
            result = func(*inner_args)
            stages["checked"] = _mark()
            return result

        data = real_child(timed, args, max_memory)
        stages["encoded"] = _mark()
        fd = os.open(records, os.O_WRONLY | os.O_APPEND)
        os.write(fd, (json.dumps(stages) + "\n").encode())
        os.close(fd)
        return data

    def fork():
        start = time.process_time()
        pid = real_fork()
        if pid:
            forks.append((time.process_time() - start) * 1000)
        return pid

    def waitpid(pid, options):
        done, status, usage = os.wait4(pid, options)
        if done:
            reaped.append(((usage.ru_utime + usage.ru_stime) * 1000, usage.ru_minflt))
        return done, status

    isolation._child, os.fork, os.waitpid = child, fork, waitpid
    from lstm_inspect.cli import main

    start, faults = time.process_time(), _minflt()
    sink = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    os.dup2(sink, 1)  # the report itself is not measured here
    try:
        main(["check", "--format", "json", directory])
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
    files = len(os.listdir(directory))
    figures = {"parent_cpu": (time.process_time() - start) * 1000 / files,
               "parent_faults": (_minflt() - faults) / files,
               "fork_cpu": statistics.median(forks), "child_cpu": statistics.median(r[0] for r in reaped),
               "child_faults": statistics.median(r[1] for r in reaped)}
    os.fork, os.waitpid = real_fork, real_waitpid
    libc_fork = ctypes.PyDLL(None).fork  # holds the GIL; no Python after-fork handlers run in the child
    for name, forker in (("bare_os_fork", os.fork), ("bare_libc_fork", libc_fork)):
        parent, children = [], []
        for _ in range(40):
            start = time.process_time()
            pid = forker()
            if pid == 0:
                os._exit(0)
            parent.append((time.process_time() - start) * 1000)
            _, _, usage = os.wait4(pid, 0)
            children.append(((usage.ru_utime + usage.ru_stime) * 1000, usage.ru_minflt))
        figures[name] = (statistics.median(parent), statistics.median(c[0] for c in children),
                         statistics.median(c[1] for c in children))
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    with open("/proc/self/maps") as handle:
        figures["mappings"] = sum(1 for _ in handle)
    figures["anon_kib"] = int(status["RssAnon"].split()[0])
    figures["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--inner", nargs=2, metavar=("DIR", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(*args.inner)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_check_jobs import build

    with tempfile.TemporaryDirectory() as tmp:
        directory, records = Path(tmp) / "models", Path(tmp) / "stages.jsonl"
        directory.mkdir()
        build(directory, args.files)
        records.touch()
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, __file__, "--inner", str(directory), str(records)], check=True,
                              capture_output=True, text=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        stages = [json.loads(line) for line in records.read_text().splitlines()]
    print(f"{args.files} files; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; the parent: "
          f"{figures['mappings']} mappings, {figures['anon_kib'] / 1024:.0f} MiB anonymous")
    print(f"{'per file (medians)':<52} {'CPU ms':>8} {'faults':>8}")
    previous = (0.0, 0)
    labels = {"start": "child: fork's return, Python's after-fork work",
              "read": "child: set-up (faulthandler, memory limit)",
              "checked": "child: the check itself",
              "encoded": "child: the answer as JSON"}
    for name, label in labels.items():
        cpu = statistics.median(s[name][0] for s in stages)
        faults = statistics.median(s[name][1] for s in stages)
        print(f"{label:<52} {cpu - previous[0]:>8.2f} {faults - previous[1]:>8.0f}")
        previous = (cpu, faults)
    print(f"{'child: exit (teardown), by wait4 minus the above':<52} {figures['child_cpu'] - previous[0]:>8.2f} "
          f"{figures['child_faults'] - previous[1]:>8.0f}")
    print(f"{'child: total (wait4)':<52} {figures['child_cpu']:>8.2f} {figures['child_faults']:>8.0f}")
    print(f"{'parent: os.fork()':<52} {figures['fork_cpu']:>8.2f}")
    print(f"{'parent: everything, per file (incl. start-up)':<52} {figures['parent_cpu']:>8.2f} "
          f"{figures['parent_faults']:>8.0f}")
    for name, label in (("bare_os_fork", "os.fork"), ("bare_libc_fork", "libc fork, no Python after-fork")):
        fork_cpu, child_cpu, child_faults = figures[name]
        print(f"{'floor, ' + label + ': fork / child':<52} {fork_cpu:>8.2f} / {child_cpu:.2f} ms, "
              f"{child_faults:.0f} faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())

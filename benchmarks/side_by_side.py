"""A benchmark at several commits, their runs interleaved: the speed comparison a noisy host allows.

On the project's 2-core hosts a benchmark's rate moves by a third or more between runs minutes apart (the
matmul peaks it measures move more), so one commit's run followed by another's mostly compares the moments
they ran at. This runs each commit's own copy of the benchmark script (from a ``git archive``, with that
commit's package) in turns, commit after commit, ``--rounds`` times, and prints each rate line's median
per commit and the ratio to the first commit's:

    .venv/bin/python benchmarks/side_by_side.py 59a6d7b HEAD -- training_throughput.py --hidden-dim 512
    .venv/bin/python benchmarks/side_by_side.py 59a6d7b HEAD --rounds 2 -- feature_extraction.py --images DIR

A rate line is any output line with a number followed by ``tokens/s``, ``images/s`` or ``captions/s``; it is named by
the words before that number (e.g. ``ours, soft attention``, ``extract, after warm-up``). Each run's host
line (CPU, matmul peaks) is printed as it ends, so the peaks of the moment stand beside its rates.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from same_artifacts import short_sha, unpack

RATE = re.compile(r"^\s*(?P<name>[^\d\[]*?)\s+(?P<rate>\d+(?:\.\d+)?) (?P<unit>tokens/s|images/s|captions/s)")


def rates(output: str) -> dict[str, float]:
    """The rate lines of a benchmark's output, by name (under a heading such as ``float32:``, prefixed by it)."""
    found: dict[str, float] = {}
    section = ""
    for line in output.splitlines():
        if line.endswith(":"):
            section = line.split(",")[0].rstrip(":") + ": "  # feature_extraction.py's precision headings
        match = RATE.match(line)
        if match:
            found[section + match["name"] + f" ({match['unit']})"] = float(match["rate"])
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commits", nargs="+", help="two or more commits; ratios are to the first")
    p.add_argument("--rounds", type=int, default=3)
    p.epilog = "After the commits and options: -- script.py [its options], a script in benchmarks/."
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    script, *options = argv[cut + 1 :] or [""]
    if len(args.commits) < 2 or not script:
        p.error("give two or more commits, then -- and the benchmark script with its options")
    measured: dict[str, dict[str, list[float]]] = {c: {} for c in args.commits}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {c: unpack(c, Path(tmp) / short_sha(c)) for c in args.commits}
        for r in range(args.rounds):
            for commit, source in sources.items():
                env = os.environ | {"PYTHONPATH": str(source / "src")}
                cmd = [sys.executable, str(source / "benchmarks" / script), *options]
                run = subprocess.run(cmd, env=env, cwd=os.getcwd(), capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"error: {script} failed at {commit}:\n{run.stderr[-3000:]}")
                host = next((line for line in run.stdout.splitlines() if line.startswith("host:")), "host: ?")
                print(f"round {r + 1}, {commit}: {host}", flush=True)
                for name, rate in rates(run.stdout).items():
                    measured[commit].setdefault(name, []).append(rate)
    first = args.commits[0]
    print(f"\n{script} {' '.join(options)}: median of {args.rounds} interleaved runs per commit")
    for name, runs in measured[first].items():
        print(f"{name}")
        for commit in args.commits:
            got = measured[commit].get(name)
            if not got:
                print(f"  {commit:12s} (no such line)")
                continue
            ratio = statistics.median(got) / statistics.median(runs)
            each = " ".join(f"{x:.1f}" for x in got)
            print(f"  {commit:12s} {statistics.median(got):9.1f}  [{each}]  {ratio:5.2f}x {first}")


if __name__ == "__main__":
    main()

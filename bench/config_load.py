"""Benchmark of loading qms.yaml with its limits (nesting, alias expansion) against plain ruamel.yaml.

    python bench/config_load.py [--rounds 5] [--file PATH]

Every process (CLI, runner, web app, each flow run) loads qms.yaml, so the limits must cost nothing
on the happy path. Measures, in one process and interleaved round by round: ruamel.yaml's round-trip
load alone (the baseline), the bounded load of qmsflow.settings (same parser with the limits), and
the whole of parse_config (bounded load + validation). Default file: the 50-system, ~500-document
qms.yaml of the large demo, written to a temporary folder. Also times a YAML bomb's refusal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402

from qmsflow.settings import ConfigError, _yaml, parse_config  # noqa: E402


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    if args.file:
        path = args.file
    else:
        from qmsflow.demo.large import write_config

        path = Path(tempfile.mkdtemp(prefix="qms-bench-config-")) / "large"
        write_config(path)
        path = path / "qms.yaml"
    text = path.read_text(encoding="utf-8")
    print(f"{path}: {len(text.encode()):,} bytes")
    plain, bounded, whole = [], [], []
    runs = [
        (plain, lambda: YAML(typ="rt").load(text)),
        (bounded, lambda: _yaml().load(text)),
        (whole, lambda: parse_config(text, path)),
    ]
    parse_config(text, path)  # warm-up: imports and caches, measured by none of them
    for round_no in range(args.rounds):
        for times, run in runs[round_no % 3 :] + runs[: round_no % 3]:  # each goes first in turn
            times.append(timed(run))
    base = statistics.median(plain)
    for name, values in (("ruamel rt load (baseline)", plain), ("bounded load", bounded), ("parse_config", whole)):
        median = statistics.median(values)
        print(f"{name:28} median {median * 1000:8.1f} ms  ratio {median / base:5.2f}")
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    bomb = text + "\n".join(lines) + "\n"

    def refuse() -> None:
        try:
            parse_config(bomb, path)
        except ConfigError:
            return
        raise SystemExit("the YAML bomb was not refused")

    print(f"{'YAML bomb (10 x 10) refused':28} in {timed(refuse) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

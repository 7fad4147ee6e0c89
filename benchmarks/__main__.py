"""Runs the benchmarks on every backend and writes the results.

    python -m benchmarks                      # everything, full sizes
    python -m benchmarks --quick              # small sizes, a few minutes (make bench)
    python -m benchmarks attention --backends jax
    python -m benchmarks length_generalization --quick

Speed parts run once per backend, each in its own process (`benchmarks.speed`);
the length-generalization study runs on JAX. Writes, under `--output-dir`
(default `benchmarks/results/`, or `benchmarks/results/quick/` with
`--quick`): `<machine>-<date>.json`, `.md` and `.png` for the speed parts, and
`length_generalization.{json,md,png}` for the study.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import report
from benchmarks.speed import PARTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
STUDY = "length_generalization"


def run_speed(backend, parts, quick):
    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "results.json")
        command = [sys.executable, "-m", "benchmarks.speed", "--output", output]
        command += ["--parts", *parts] + (["--quick"] if quick else [])
        env = {**os.environ, "KERAS_BACKEND": backend}
        subprocess.run(command, cwd=ROOT, env=env, check=True)
        with open(output) as file:
            return json.load(file)


def run_study(quick, output_dir):
    command = [sys.executable, "-m", "benchmarks.length_generalization"]
    command += ["--output-dir", output_dir] + (["--quick"] if quick else [])
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "parts",
        nargs="*",
        choices=list(PARTS) + [STUDY],
        help="parts to run (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    parser.add_argument("--output-dir", help="where to write the results")
    args = parser.parse_args(argv)
    parts = args.parts or list(PARTS) + [STUDY]
    output_dir = args.output_dir or os.path.join(
        ROOT, "benchmarks", "results", "quick" if args.quick else ""
    )
    os.makedirs(output_dir, exist_ok=True)

    start = time.perf_counter()
    speed_parts = [part for part in parts if part != STUDY]
    if speed_parts:
        description = report.machine()
        results = {
            "machine": description,
            "date": report.today(),
            "quick": args.quick,
            "backends": {},
        }
        for backend in args.backends:
            print(f"=== {', '.join(speed_parts)} on {backend}", flush=True)
            results["backends"][backend] = run_speed(backend, speed_parts, args.quick)
        results["seconds"] = time.perf_counter() - start
        stem = os.path.join(
            output_dir, f"{report.machine_slug(description)}-{results['date']}"
        )
        with open(stem + ".json", "w") as file:
            json.dump(results, file, indent=1)
        table = report.markdown(results)
        with open(stem + ".md", "w") as file:
            file.write(table + "\n")
        report.plot(results, stem + ".png")
        print(table)
        print(f"wrote {stem}.json, .md, .png")
    if STUDY in parts:
        print("=== length-generalization study (jax)", flush=True)
        run_study(args.quick, output_dir)
    print(f"benchmarks took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

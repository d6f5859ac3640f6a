"""``python -m bench [--quick] [SCENARIO ...]``: run the benchmarks, print the table, and
write the results (JSON and a PNG chart) to bench/results/. ``bench/run`` is the one
command: it installs what is missing and then runs this."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from bench import host, scenarios
from bench.report import Results, write

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LATEST_PNG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latest.png")
BENCHMARKS_MD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md"
)
TABLE_START, TABLE_END = "<!-- bench:table -->", "<!-- /bench:table -->"

SCENARIOS = {
    "echo": scenarios.echo,
    "http": scenarios.http,
    "mixed": scenarios.mixed,
    "mixed-io": scenarios.mixed_io,
    "mixed-sync-io": scenarios.mixed_sync_io,
    "mixed-stream": scenarios.mixed_stream,
    "split": scenarios.split,
    "trickle": scenarios.trickle,
    "middleware": scenarios.middleware,
    "orm": scenarios.orm,
    "streams": scenarios.streams,
    "auth": scenarios.auth,
    "tls": scenarios.tls,
    "logging": scenarios.access_log,
    "peers": scenarios.peers,
    "lab": scenarios.lab,
}
#: Run by default; "trickle" and "lab" (the root-cause experiment) only when named.
DEFAULT = (
    "echo",
    "http",
    "mixed",
    "mixed-io",
    "mixed-sync-io",
    "mixed-stream",
    "split",
    "middleware",
    "orm",
    "streams",
    "auth",
    "tls",
    "logging",
    "peers",
)
QUICK = ("echo", "http", "mixed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of: {', '.join(SCENARIOS)} (default: {' '.join(DEFAULT)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"short runs, one round ({', '.join(QUICK)} unless scenarios are named)",
    )
    parser.add_argument("--duration", type=float, help="seconds per load run (default 5; quick 2)")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 3; quick 1)")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="copy the chart to bench/latest.png and the table into BENCHMARKS.md, with a "
        "warning above it if the machine did not stay steady (bench/host.py); full runs only",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if args.publish and (args.quick or args.scenarios or args.duration or args.rounds):
        parser.error(
            "--publish replaces the whole table in BENCHMARKS.md: use it only for a full "
            "run, without --quick, scenarios, --duration or --rounds"
        )
    names = args.scenarios or list(QUICK if args.quick else DEFAULT)
    results = Results()
    bench = scenarios.Bench(
        duration=args.duration or (2.0 if args.quick else 5.0),
        rounds=args.rounds or (1 if args.quick else 3),
        warmup=1.0,
        quick=args.quick,
        results=results,
    )
    results.settings.update(
        scenarios=names, duration=bench.duration, rounds=bench.rounds, command=" ".join(sys.argv)
    )
    started = time.monotonic()
    gauge = host.Gauge()
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        gauge.sample(name)
        try:
            SCENARIOS[name](bench)
        except Exception as exc:  # one failing scenario must not lose the others
            results.missing.append(f"{name}: failed: {type(exc).__name__}: {exc}".splitlines()[0])
            print(f"   {name} failed:\n{exc}", file=sys.stderr)
    gauge.sample("end")
    results.settings["elapsed_s"] = round(time.monotonic() - started)
    steadiness = results.settings["host"] = gauge.summary()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = write(results, RESULTS, stamp)
    table = f"{results.table()}\n\n{host.line(steadiness)}"
    print(table)
    print(f"\n{json_path}\n{png_path}\n({results.settings['elapsed_s']} s)")
    if args.publish:
        problems = host.problems(steadiness)
        if problems:
            # Published all the same, saying so above the table: a table of older code
            # is the worse guide, and every comparison in it is a same-run pair.
            print("Published with a warning: the machine was not steady.", file=sys.stderr)
            print("".join(f"- {problem}\n" for problem in problems), end="", file=sys.stderr)
            table = f"{host.warning(problems)}\n\n{table}"
        publish(table, png_path)
    return 0


def publish(table: str, png_path: str) -> None:
    if os.path.exists(png_path):
        shutil.copyfile(png_path, LATEST_PNG)
    with open(BENCHMARKS_MD) as doc:
        text = doc.read()
    head, found, rest = text.partition(TABLE_START)
    _, found_end, tail = rest.partition(TABLE_END)
    if not (found and found_end):
        print(f"BENCHMARKS.md has no {TABLE_START} block; table not published", file=sys.stderr)
        return
    with open(BENCHMARKS_MD, "w") as doc:
        doc.write(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())

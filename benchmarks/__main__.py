"""python -m benchmarks [noop] [large_list] [build] [protect] [figures] [cache] [parallel] [schedule]: run the named benchmarks.

A benchmark's verdict is a line ending in PASS or FAIL; the key figures are printed for reading and judge nothing.
"""
import sys

from . import build_overhead, cluster_schedule, graph_load, key_figures, parallel_build, protect
from . import cache as shared_cache

ALL = ("noop", "large_list", "build", protect.NAME, key_figures.NAME, shared_cache.NAME, parallel_build.NAME, cluster_schedule.NAME)


def main(argv) -> int:
    names = tuple(argv) or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    verdicts = []
    for module in (graph_load, build_overhead, protect, key_figures, shared_cache, parallel_build, cluster_schedule):
        for line in module.main(names):
            print(line, flush=True)  # each figure as soon as it is measured: the whole run takes many minutes
            if line.endswith((" PASS", " FAIL")):
                verdicts.append(line)
    return 0 if all(line.endswith(" PASS") and " FAIL" not in line for line in verdicts) else 1


sys.exit(main(sys.argv[1:]))

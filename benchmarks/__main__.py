"""python -m benchmarks [NAME...]: run the named benchmarks (all by default; an unknown name lists them).

A benchmark's verdict is a line ending in PASS or FAIL; the key figures are printed for reading and judge nothing.
"""
import sys

from . import build_overhead, cluster_schedule, graph_load, key_figures, monitor, onnx_rebuild, parallel_build, protect, telemetry, training
from . import cache as shared_cache

# Each module runs the benchmarks of its NAMES that were asked for.
MODULES = (
    graph_load, build_overhead, protect, key_figures, onnx_rebuild, telemetry, monitor, training,
    shared_cache, parallel_build, cluster_schedule,
)
ALL = tuple(name for module in MODULES for name in module.NAMES)


def main(argv) -> int:
    names = tuple(argv) or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    verdicts = []
    for module in MODULES:
        for line in module.main(names):
            print(line, flush=True)  # each figure as soon as it is measured: the whole run takes many minutes
            if line.endswith((" PASS", " FAIL")):
                verdicts.append(line)
    return 0 if all(line.endswith(" PASS") and " FAIL" not in line for line in verdicts) else 1


sys.exit(main(sys.argv[1:]))

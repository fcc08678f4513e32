"""python -m benchmarks [noop] [large_list] [build] [protect]: run the named benchmarks (all by default)."""
import sys

from . import build_overhead, graph_load, protect

ALL = ("noop", "large_list", "build", protect.NAME)


def main(argv) -> int:
    names = tuple(argv) or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    lines = []
    for module in (graph_load, build_overhead, protect):
        for line in module.main(names):
            print(line, flush=True)  # each figure as soon as it is measured: the whole run takes many minutes
            lines.append(line)
    return 0 if all(line.endswith("PASS") and " FAIL" not in line for line in lines) else 1


sys.exit(main(sys.argv[1:]))

"""Two installations of vecconv side by side: the same cases, forward + backward, timed in
fresh processes that alternate between the two Python environments (ABAB...), PyTorch
imported and run first in each, as a user's process has it.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/versions.py \
        --before /path/to/old/venv/bin/python --after /path/to/new/venv/bin/python \
        [--rounds 5] [--json bench/results/versions.json]

Each round runs one worker process per environment; a worker times every case
(median of its repeats) and prints JSON. The table reports, per case and dtype, the median
over rounds of after/before (below 1: the new installation is faster), so a slow spell of
the machine lands on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

#: the README's benchmark cases (bench/bench.py's): name -> (N, Cin, H, W, Cout, k, stride,
#: padding, table)
from bench import CASES  # noqa: E402

WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import harness
import numpy as np
import torch
torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3)).sum()  # torch first
import vecconv as vc
cases, dtypes, repeats = json.loads(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
out = {}
for name, (n, c, h, w, cout, k, s, p, table) in cases.items():
    for dt in dtypes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(dt)
        wt = rng.standard_normal((cout, c, k, k)).astype(dt)
        conn = vc.nn.lenet5_c3_table() if table else None
        def step():
            y = vc.conv2d(x, wt, stride=s, padding=p, connections=conn)
            vc.conv2d_backward(y, x, wt, stride=s, padding=p, connections=conn)
        out[f"{name}/{dt}"] = harness.timed(step, repeats, warmup=2)["median"]
print(json.dumps(out))
"""


def run(python, cases, dtypes, repeats):
    done = subprocess.run([python, "-c", WORKER, str(HERE), json.dumps(cases), dtypes,
                           str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="python of the old installation")
    p.add_argument("--after", required=True, help="python of the new installation")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--smoke", action="store_true", help="one round, one repeat, two cases")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    names = args.cases.split(",")
    if args.smoke:
        names, args.rounds, args.repeats = names[:2], 1, 1
    cases = {n: CASES[n] for n in names}
    rounds = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for side in order:
            rounds[side].append(run(getattr(args, side), cases, args.dtypes, args.repeats))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for key in rounds["before"][0]:
        ratios = [a[key] / b[key] for a, b in zip(rounds["after"], rounds["before"])]
        before = statistics.median(b[key] for b in rounds["before"])
        after = statistics.median(a[key] for a in rounds["after"])
        rows.append(dict(case=key, before_ms=before * 1e3, after_ms=after * 1e3,
                         after_over_before=statistics.median(ratios),
                         worst=max(ratios), best=min(ratios)))
    try:                       # the record names PyTorch's version and backends
        import torch  # noqa: F401
    except ImportError:
        pass
    facts = harness.machine()
    print(harness.describe(facts))
    print(f"{'case':28s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s} "
          f"{'range':>13s}")
    for r in rows:
        print(f"{r['case']:28s} {r['before_ms']:10.2f} {r['after_ms']:10.2f} "
              f"{r['after_over_before']:13.3f} {r['best']:6.2f}-{r['worst']:.2f}")
    if args.json:
        harness.write_json(args.json, dict(machine=facts, rounds=args.rounds, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

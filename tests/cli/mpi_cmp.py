#!/usr/bin/env python3
"""mpi_cmp.py [--exact] REF.json GOT.json [RANKS]: the matrices of an
attribute run under mpirun against the one-process run (tests/cli/test_mpi.sh);
--exact (diff, whose cells are each computed whole by one rank): equal bit for
bit, as the JSON's 17 significant digits show.

Both runs add the same float64 per-sample contributions, in another order
and grouping (each rank's partial sum, then the reduction): each cell differs
by the rounding of a reordered sum of n terms, at most about n * 2^-53 times
the sum of the terms' magnitudes. With n <= 64 samples here that is < 1e-14
of a cell whose terms share its sign; 1e-9 relative leaves five orders for the
cells whose terms cancel (signed methods), and still catches a sample counted
twice or lost (>= 1/n of a cell). The standard error comes from
sum2 - sum^2 / N, so its rounding scales with (sum2 + sum^2 / N) / se: the
bound below is 1e-9 of that, the same margin. Counts (samples) must be equal;
the split-half correlation ranks the same half sums: equal within 1e-9.
Exit 0 when every matrix agrees, else 1, printing the largest differences.
"""
import json
import math
import sys

REL = 1e-9


def load(path):
    with open(path) as f:
        d = json.load(f)
    return d["matrices"] if "matrices" in d else [d]


def close(a, b, tol):
    if a is None or b is None:  # NaN is written as null
        return a is None and b is None
    return abs(a - b) <= tol


def main():
    global REL
    args = sys.argv[1:]
    if args and args[0] == "--exact":  # diff: every cell computed whole by one rank, so bit for bit equal
        REL = 0.0
        args = args[1:]
    ref, got = load(args[0]), load(args[1])
    ranks = int(args[2]) if len(args) > 2 else None
    bad = 0
    if [m["method"] for m in ref] != [m["method"] for m in got]:
        print(f"mpi_cmp: methods {[m['method'] for m in ref]} vs {[m['method'] for m in got]}")
        return 1
    for r, g in zip(ref, got):
        name = r["method"]
        if r["layers"] != g["layers"] or r.get("samples") != g.get("samples"):
            print(f"mpi_cmp: {name}: layers/samples {r['layers']}/{r.get('samples')} vs {g['layers']}/{g.get('samples')}")
            bad = 1
            continue
        n = r.get("samples") or 1
        worst, worst_se = 0.0, 0.0
        for li, (rv, gv) in enumerate(zip(r["values"], g["values"])):
            for ci, (a, b) in enumerate(zip(rv, gv)):
                tol = REL * max(abs(a or 0), abs(b or 0))
                if not close(a, b, tol):
                    print(f"mpi_cmp: {name}[{li}][{ci}]: {a!r} vs {b!r}")
                    bad = 1
                if a is not None and b is not None and tol > 0:
                    worst = max(worst, abs(a - b) / tol * REL)
                if "se" in r:
                    sa, sb = r["se"][li][ci], g["se"][li][ci]
                    if sa is None or sb is None or sa == 0:
                        ok = sa == sb if (sa is None or sb is None) else abs(sb) <= REL * abs(a or 0)
                    else:
                        sum2 = sa * sa * (n - 1) / n + (a or 0) ** 2 / n
                        tol_se = REL * (sum2 + (a or 0) ** 2 / n) / sa
                        ok = abs(sa - sb) <= tol_se
                        worst_se = max(worst_se, abs(sa - sb) / tol_se * REL)  # in units of that scale
                    if not ok:
                        print(f"mpi_cmp: {name} se[{li}][{ci}]: {sa!r} vs {sb!r}")
                        bad = 1
        sr, sg = r.get("split_half"), g.get("split_half")
        if not close(sr, sg, 1e-9):
            print(f"mpi_cmp: {name}: split_half {sr!r} vs {sg!r}")
            bad = 1
        if ranks is not None and g.get("meta", {}).get("options", {}).get("ranks") != ranks:
            print(f"mpi_cmp: {name}: meta options.ranks {g.get('meta', {}).get('options', {}).get('ranks')!r}, "
                  f"expected {ranks}")
            bad = 1
        print(f"mpi_cmp: {name}: largest relative difference {worst:.2g} (bound {REL:g}); "
              f"standard errors {worst_se:.2g} of their rounding scale (bound {REL:g})")
    return bad


if __name__ == "__main__":
    sys.exit(main())

"""Runs modules of mpi4py's own test suite (its sdist's test/ directory) on every rank
and records each test's outcome per rank, so that a run under mana_launch can be
compared test by test with a native one.

    suite.py TESTDIR OUTDIR [-x PATTERN]... MODULE...

`-x PATTERN` leaves out the tests whose id matches the shell-style PATTERN (as mpi4py's
own test/main.py -x does).

Writes OUTDIR/rank-R.txt (one `OUTCOME TEST_ID SECONDS` line per test, OUTCOME one of
ok, fail, error, skip, xfail, xpass) and OUTDIR/rank-R.log (unittest's verbose output, with
tracebacks), and prints one line per rank:
`suite rank=R ran=N ok=… fail=… error=… skip=… xfail=… xpass=…`.
"""

import fnmatch
import os
import sys
import time
import unittest

testdir, outdir, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
excluded, modules = [], []
while rest:
    arg = rest.pop(0)
    if arg == "-x":
        excluded.append(rest.pop(0))
    else:
        modules.append(arg)
sys.path.insert(0, testdir)
# What mpi4py's test/main.py does for array libraries that are not installed here.
for absent in ("cupy", "numba"):
    sys.modules[absent] = None

from mpi4py import MPI  # noqa: E402

rank = MPI.COMM_WORLD.Get_rank()


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = []
        self.started = 0.0
        self.seconds = {}

    def startTest(self, test):
        self.started = time.perf_counter()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.seconds[test.id()] = time.perf_counter() - self.started

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes.append(("ok", test.id()))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes.append(("fail", test.id()))
        self.traceback_now(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes.append(("error", test.id()))
        self.traceback_now(test, err)

    def traceback_now(self, test, err):
        # Also at once, not only in the summary: a rank that later hangs never prints it.
        self.stream.write("\n" + self._exc_info_to_string(err, test))
        self.stream.flush()

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes.append(("skip", test.id()))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes.append(("xfail", test.id()))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes.append(("xpass", test.id()))




def selected(suite):
    """`suite` without the excluded tests (flattened)."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTests(selected(test))
        elif not any(fnmatch.fnmatchcase(test.id(), p) for p in excluded):
            kept.addTest(test)
    return kept


suite = selected(unittest.defaultTestLoader.loadTestsFromNames(modules))
with open(os.path.join(outdir, f"rank-{rank}.log"), "w") as log:
    runner = unittest.TextTestRunner(stream=log, verbosity=2, resultclass=Recorder)
    result = runner.run(suite)
with open(os.path.join(outdir, f"rank-{rank}.txt"), "w") as out:
    for outcome, test in result.outcomes:
        out.write(f"{outcome} {test} {result.seconds.get(test, 0.0):.3f}\n")
counts = {k: 0 for k in ("ok", "fail", "error", "skip", "xfail", "xpass")}
for outcome, _ in result.outcomes:
    counts[outcome] += 1
print(
    f"suite rank={rank} ran={result.testsRun} "
    + " ".join(f"{k}={v}" for k, v in counts.items()),
    flush=True,
)

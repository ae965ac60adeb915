"""Run one notebook top to bottom in this Python, as nbdev_test runs it (IN_TEST=1; `#| slow` and `#| notest` cells and
the `nbdev_export()` cell skipped), except that the install cell, which nbdev skips (`#| eval: false`), runs too.
Used by .ci/release on a copy of a chapter outside the repository, in a venv without digit_sgd: the first cell's
install is then what makes the chapter work. Prints one line; exit status 1 if a cell fails."""
import os, sys, time, traceback
from pathlib import Path
from execnb.shell import CaptureShell
from nbdev.process import NBProcessor

fn = Path(sys.argv[1]).absolute()
os.environ['IN_TEST'] = '1'
nb = NBProcessor(fn, process=True).nb
skip = {'slow', 'notest'}
k, t0, n = CaptureShell(fn), time.time(), 0
os.chdir(fn.parent)
for i, cell in enumerate(nb.cells):
    if cell.cell_type != 'code' or 'nbdev_export(' in cell.source or skip & (cell.directives_ or {}).keys(): continue
    k.run(cell.source); n += 1                      # (run, not run_cell: run records the exception)
    if k.exc:
        print(f"FAIL {fn.name}: cell {i} raised {k.exc!r}\n{''.join(traceback.format_exception(k.exc))}"); sys.exit(1)
print(f"ran {fn.name} outside the repository: {n} cells in {time.time()-t0:.0f} s")

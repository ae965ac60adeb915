"""Run notebooks as nbdev_test does (IN_TEST=1, the skip flags of settings.ini), one after another in one process,
so that torch and fastai are imported once rather than once per notebook. Prints PASS/FAIL per notebook."""
import sys, time
from pathlib import Path
from nbdev.config import get_config
from nbdev.test import test_nb

cfg = get_config()
skip = cfg.tst_flags.split()
failed = []
for nb in sys.argv[1:]:
    t0 = time.time()
    ok, _ = test_nb(Path(nb).absolute(), skip_flags=skip, basepath=cfg.config_path)
    print(f"{'PASS' if ok else 'FAIL'} {nb} ({time.time()-t0:.0f} s)", flush=True)
    if not ok: failed.append(nb)
sys.exit(1 if failed else 0)

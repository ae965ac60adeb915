"""Process-level checks of digit_sgd.parallel_fit (chapter 12): bad input fails fast, a failing worker gives one line and
leaves nothing behind, and (issue #22) two-process training finishes cleanly, every time, on a machine whose every core
is busy, and a stopped run leaves no process and no file.

Needs MNIST where fastai keeps it ($FASTAI_HOME/data/mnist_png) for the training tests. `DIGIT_SGD_LOAD_REPS=N` runs
the under-load fits N times each (default 1, so that `bash .ci/test` stays fast)."""
import os, signal, subprocess, sys, tempfile, time
from contextlib import contextmanager
from pathlib import Path
import psutil, pytest
from digit_sgd.parallel import max_nproc
from digit_sgd.parallel_fit import fit_digits_parallel, launch_workers

REPS = int(os.environ.get('DIGIT_SGD_LOAD_REPS', '1'))
LIMIT = 600                # s for one small fit on a loaded machine (about 25 s idle, 60 s at a load of 13): else a hang
# the smallest fit that learns (about 0.67 accuracy on one process, 0.54 on two): 100 images per digit, 10 to validate
SMALL = dict(n_per_digit=100, n_valid=10, bs=32, lr=0.01)
CLI_SMALL = ('--n-per-digit', 100, '--n-valid', 10, '--bs', 32, '--lr', 0.01)   # learns (about 0.6), in seconds


def _mnist():
    from digit_sgd.data import mnist_path, MNISTMissingError
    try: return mnist_path(download=False)
    except MNISTMissingError as e: pytest.skip(f"MNIST is not here: {str(e).splitlines()[0]}")


def _cli() -> list:
    "The `digit-sgd` command as a user runs it: the installed script next to this Python, else `python -c main()`"
    exe = Path(sys.executable).parent/'digit-sgd'
    return [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())']


def _procs(token) -> list:
    "Processes whose command line mentions `token`"
    out = []
    for p in psutil.process_iter(['cmdline']):
        try:
            if any(str(token) in a for a in (p.info['cmdline'] or [])): out.append(p.pid)
        except psutil.Error: pass
    return out


def _left(tmp: Path, killed: bool = False) -> list:
    """What a run left in the temporary folder `tmp`: torch's compile cache (torchinductor_*) may stay, and, if it was
    killed, multiprocessing's pymp-* folders of its killed processes (one socket each)"""
    keep = ('torchinductor_', 'pymp-') if killed else ('torchinductor_',)
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith(keep))


@contextmanager
def time_limit(seconds: int):
    "A `TimeoutError` in this (the main) thread after `seconds`: a run that hangs fails, and its `finally`s clean up"
    def fire(*_): raise TimeoutError(f"still running after {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)


def run_cli(*args, timeout: int = LIMIT):
    "`digit-sgd *args` in a new process: (exit status, stdout, stderr); past `timeout` s it gets SIGTERM and the test fails"
    p = subprocess.Popen([*_cli(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try: o, e = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate(); o, e = p.communicate(timeout=120)               # SIGTERM: the CLI ends its workers itself
        pytest.fail(f"digit-sgd {' '.join(map(str, args))} still running after {timeout} s: a hang; {e[-2000:]}")
    return p.returncode, o, e


@pytest.fixture
def busy_cores():
    "Every core busy with a spinning process (each stops by itself after 600 s at most, and is killed at the end)"
    code = 'import time\nt = time.time() + 600\nwhile time.time() < t: pass'
    spin = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(os.cpu_count() or 1)]
    time.sleep(0.5)
    try: yield len(spin)
    finally:
        for p in spin: p.kill()
        for p in spin: p.wait()


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    "A temporary folder of the test's own, for this process (tempfile) and the processes it starts (TMPDIR)"
    d = tmp_path/'tmp'
    d.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(d))
    monkeypatch.setenv('TMPDIR', str(d))
    return d


@pytest.mark.parametrize('kw,msg', [(dict(nproc=0), 'nproc must be a positive integer'),
                                    (dict(nproc=max_nproc(gpus=False) + 1), 'nproc must be at most'),
                                    (dict(nproc=2, lr=0), 'lr must be a finite number > 0'),
                                    (dict(nproc=2, bs=0), 'batch size must be a positive integer'),
                                    (dict(nproc=2, bs=1), 'smaller than nproc=2'),
                                    (dict(nproc=2, n_valid=0, n_per_digit=10), 'n_valid must be a positive integer'),
                                    (dict(nproc=2, n_valid=10), 'n_valid needs n_per_digit')])
def test_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg): fit_digits_parallel(**kw)


def test_worker_error_is_one_line_and_cleaned_up():
    token = 'digit-sgd-test-parallel-token'
    with pytest.raises(RuntimeError) as e:
        launch_workers(['--no-python', sys.executable, '-c', f'import os, time; os.environ["RANK"] == "1" and time.sleep(300); raise ValueError("{token}")'], 2, timeout=120)
    assert '\n' not in str(e.value) and f'ValueError: {token}' in str(e.value)
    assert not _procs(token)


def test_launch_leaves_no_log_folder(own_tmp):
    "torchrun writes a torchelastic_* log folder, and leaves it even when all goes well: launch_workers removes it"
    launch_workers(['--no-python', sys.executable, '-c', 'pass'], 2)
    script = own_tmp.parent/'sleeper.py'
    script.write_text('import time\ntime.sleep(300)\n')
    with pytest.raises(RuntimeError, match='time limit'): launch_workers([script], 2, timeout=8)
    assert not _left(own_tmp), _left(own_tmp)
    assert not _procs(script)


# ---- issue #22: nothing lost, nothing hangs, with every core busy ------------------------------------------------

def test_two_process_fit_under_load(busy_cores, own_tmp, tmp_path):
    "Chapter 12's two-process fit, while every core spins: both workers exit cleanly (no SIGABRT at exit) every time"
    _mnist()
    for i in range(REPS):
        out = tmp_path/f'm{i}.safetensors'
        with time_limit(LIMIT): r = fit_digits_parallel(2, 1, out, progress=False, **SMALL)   # a worker that dies: RuntimeError
        assert r['nproc'] == 2 and r['n_valid'] == 100 and r['accuracy'] > 0.2, r   # it learned (chance: 0.1)
        assert out.is_file() and not list(tmp_path.glob('.*tmp*'))
        assert not _left(own_tmp), _left(own_tmp)                     # no temporary file of torchrun or the workers


def test_cli_fit_nproc_2_under_load(busy_cores, own_tmp, tmp_path):
    "`digit-sgd fit --nproc 2` while every core spins: exit 0 and the model, every time"
    _mnist()
    for i in range(REPS):
        out = tmp_path/f'c{i}.safetensors'
        rc, o, e = run_cli('fit', '--nproc', 2, *CLI_SMALL, '--out', out, '--quiet')
        assert rc == 0, (rc, e[-3000:])
        assert 'on 2 processes' in o and f'model saved to {out}' in o, o
        assert 'terminate called' not in o + e
        assert out.is_file() and not list(tmp_path.glob('.*tmp*'))
        assert not _left(own_tmp), _left(own_tmp)


def test_sigterm_during_parallel_fit_leaves_nothing(own_tmp, tmp_path):
    "SIGTERM to `digit-sgd fit --nproc 2` while its workers train: one line, exit 143, no worker left, no file left"
    _mnist()
    out = tmp_path/'m.safetensors'
    p = subprocess.Popen([*_cli(), *map(str, ('fit', '--nproc', 2, '--n-per-digit', 50, '--epochs', 5, '--out', out, '--quiet'))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()           # the workers have made their subsets (in the run's own folder): training starts
    while len(list(own_tmp.glob('fit_parallel_*/mnist_subset_r*'))) < 2 and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.1)
    time.sleep(2)
    assert p.poll() is None, p.communicate()
    workers = psutil.Process(p.pid).children(recursive=True)
    assert len(workers) >= 3, workers                                 # torchrun and its 2 workers
    p.terminate()
    o, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err)
    assert 'stopped (SIGTERM); nothing was saved' in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, alive                                           # torchrun and the workers are gone
    assert not out.exists() and not list(tmp_path.glob('.*tmp*'))     # no model, no half-written file beside it
    assert not _left(own_tmp, killed=True), _left(own_tmp, killed=True)   # and no temporary folder

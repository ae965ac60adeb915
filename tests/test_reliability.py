"""Issue #13's process-level cases: what a user's mistakes and a hostile or broken environment do to `digit-sgd` and
the data cache, each run as a separate process, as a user would.

Needs MNIST where fastai keeps it ($FASTAI_HOME/data/mnist_png). Every test works on its own throw-away
FASTAI_HOME (MNIST linked in, never copied), so none touches the user's cache. Run: `.venv/bin/python -m pytest
tests/test_reliability.py` (it is part of `bash .ci/test`).
"""
import builtins, json, os, pickle, shutil, subprocess, sys, time
from pathlib import Path
import pytest

def _mnist() -> Path:
    from digit_sgd.data import mnist_path, MNISTMissingError
    try: return mnist_path(download=False)
    except MNISTMissingError as e: pytest.skip(f"MNIST is not here: {str(e).splitlines()[0]}")


def run(*args, env=None, timeout=600):
    "`digit-sgd *args` in a new process: (exit status, stdout, stderr, seconds)"
    cmd = [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())', *map(str, args)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return r.returncode, r.stdout, r.stderr, time.perf_counter() - t0


def one_line_error(rc, err, expect):
    assert rc == 2, (rc, err)
    assert 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert expect in err, err


def linked_home(tmp: Path, replace: dict | None = None) -> Path:
    """A FASTAI_HOME whose mnist_png links to the real one, folder by folder; `replace` maps 'split/digit' to a
    function that fills a real folder (holding links to the real PNGs) with changes"""
    src, home = _mnist(), tmp/'home'
    for split in ('training', 'testing'):
        for d in range(10):
            dst = home/'data'/'mnist_png'/split/str(d)
            dst.parent.mkdir(parents=True, exist_ok=True)
            key = f'{split}/{d}'
            if replace and key in replace:
                dst.mkdir()
                for f in os.scandir(src/split/str(d)): os.symlink(f.path, dst/f.name)
                replace[key](dst)
            else: os.symlink(src/split/str(d), dst)
    return home


# ---- model files that could run code ------------------------------------------------------------------------------

class Payload:
    "Unpickling it creates the file `target`: a harmless stand-in for what an attacker would run"
    def __init__(self, target): self.target = str(target)
    def __reduce__(self): return (builtins.open, (self.target, 'w'))


def test_malicious_pickle_never_runs_by_default(tmp_path):
    _mnist()
    evil, marker = tmp_path/'model.pkl', tmp_path/'payload_ran'
    evil.write_bytes(pickle.dumps(Payload(marker)))
    img = next((_mnist()/'testing'/'3').iterdir())
    rc, out, err, secs = run('predict', img, '--model', evil)
    one_line_error(rc, err, '--unsafe-pickle')
    assert not marker.exists(), "the default path unpickled the file"
    # with the flag the user asked for it: a warning first, the payload runs, then a clean error
    rc, out, err, secs = run('predict', img, '--model', evil, '--unsafe-pickle')
    assert rc == 2 and 'Traceback' not in err and 'can run any code' in err and 'not a model saved' in err, err
    assert marker.exists()


SMALL_FIT = ('--n-per-digit', 100, '--n-valid', 10, '--bs', 32, '--lr', 0.01)   # one epoch of this learns (about 0.67)


@pytest.fixture(scope='module')
def small_model(tmp_path_factory):
    "`digit-sgd fit` on 100 images per digit (the least that learns): a real model file, made the way a user makes one"
    _mnist()
    out = tmp_path_factory.mktemp('model')/'m.safetensors'
    rc, o, err, secs = run('fit', *SMALL_FIT, '--out', out, '--quiet')
    assert rc == 0, err
    return out


def test_fit_then_predict_safetensors(small_model):
    from safetensors import safe_open
    with safe_open(small_model, 'pt') as f: meta = json.loads(f.metadata()['digit_sgd'])
    assert meta['arch'] == 'resnet18' and meta['classes'] == list(range(10)) and meta['info']['n_train'] == 1000
    img = sorted((_mnist()/'testing'/'7').iterdir())[0]
    rc, o, err, secs = run('predict', img, '--model', small_model)
    assert rc == 0 and o.startswith(f"{img}: ") and o.strip().endswith('%)'), (o, err)


# ---- the cache ----------------------------------------------------------------------------------------------------

def _load_in_new_process(home: Path, code: str):
    return subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'FASTAI_HOME': str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_build_the_cache_at_once(tmp_path):
    home = linked_home(tmp_path)
    code = ("from digit_sgd.data import load_digit; import hashlib; x = load_digit(4, 'testing'); "
            "print(hashlib.sha256(x.numpy().tobytes()).hexdigest())")
    procs = [_load_in_new_process(home, code) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for o, e in outs]
    digests = {o.strip() for o, e in outs}
    assert len(digests) == 1, digests                                # every process got the same pixels
    cache = home/'data'/'digit_sgd_cache'
    assert sorted(p.name for p in cache.iterdir()) == ['testing_4.pt']   # one complete file, no temporary left
    p = _load_in_new_process(home, code)                             # and it reads back as the same pixels
    o, e = p.communicate(timeout=300)
    assert p.returncode == 0 and o.strip() in digests, e


def test_unwritable_cache_decodes_and_warns_once(tmp_path):
    home = linked_home(tmp_path)
    if os.geteuid() == 0:         # root writes through chmod: block the cache folder with a file of its name
        (home/'data'/'digit_sgd_cache').write_text('not a folder')
    else: os.chmod(home/'data', 0o555)
    code = ("import warnings; warnings.simplefilter('always'); from digit_sgd.data import load_digit; "
            "a = load_digit(4, 'testing'); b = load_digit(4, 'testing'); print(len(a), len(b))")
    p = _load_in_new_process(home, code)
    o, e = p.communicate(timeout=300)
    os.chmod(home/'data', 0o755)
    assert p.returncode == 0 and o.strip() == '982 982', e
    assert e.count('could not write the tensor cache') >= 1 and 'decoding without it' in e, e


def test_wrong_size_png_in_a_digit_folder(tmp_path):
    from PIL import Image
    def one_big(folder):
        f = sorted(folder.iterdir())[0]
        f.unlink(); Image.new('L', (32, 32)).save(f)
    home = linked_home(tmp_path, {'training/4': one_big})
    rc, out, err, secs = run('train', '--digits', 5, 4, env={'FASTAI_HOME': str(home)})
    one_line_error(rc, err, 'is 32x32 pixels; MNIST images are 28x28')
    assert str(home/'data'/'mnist_png'/'training'/'4') in err                   # names the file


def test_truncated_png_names_the_file(tmp_path):
    def cut(folder):
        f = sorted(folder.iterdir())[1]
        data = f.read_bytes(); f.unlink(); f.write_bytes(data[:len(data)//2])
    home = linked_home(tmp_path, {'training/5': cut})
    rc, out, err, secs = run('train', '--digits', 5, 4, env={'FASTAI_HOME': str(home)})
    one_line_error(rc, err, 'cannot read ')
    assert sorted(os.listdir(home/'data'/'mnist_png'/'training'/'5'))[1] in err


def test_invalid_config_ini(tmp_path):
    (tmp_path/'config.ini').write_text('this is not [ini\n= at all')
    rc, out, err, secs = run('data', '--offline', env={'FASTAI_HOME': str(tmp_path)})
    one_line_error(rc, err, 'digit-sgd data: ')


# ---- every mistake: one line, exit 2, and quickly when it is only a bad argument ---------------------------------

FAST = [(['train', '--lr', 'inf'], 'lr must be a finite number > 0'),
        (['train', '--lr', '0'], 'lr must be a finite number > 0'),
        (['train', '--bs', '0'], 'batch size must be a positive integer'),
        (['train', '--epochs', '1.5'], "invalid int value: '1.5'"),
        (['train', '--digits', '4', '12'], 'digits must be integers 0-9'),
        (['train', '--digits', '3', '3'], 'must differ'),
        (['compare', '--device', 'bogus'], 'unknown device'),
        (['compare', '--repeats', '0'], 'repeats must be a positive integer'),
        (['fit', '--out', 'model.pkl'], 'must end in .safetensors'),
        (['fit', '--out', '/no/such/folder/m.safetensors'], 'does not exist'),
        (['fit', '--epochs', '0'], 'epochs must be a positive integer'),
        (['predict', 'missing.png', '--model', 'm.safetensors'], 'no such model file'),   # the one model first
        (['dta'], 'invalid choice'),
        (['train', '--model', 'resnet'], 'invalid choice')]


@pytest.mark.parametrize('args,expect', FAST, ids=[' '.join(a) for a, e in FAST])
def test_bad_argument_fails_fast(args, expect, tmp_path):
    rc, out, err, secs = run(*args)
    one_line_error(rc, err, expect)
    assert secs < 1.5, f"{secs:.2f} s: the check should run before torch is imported"


def test_fit_out_folder_and_readonly(tmp_path):
    rc, out, err, secs = run('fit', '--out', tmp_path)
    one_line_error(rc, err, 'must end in .safetensors')
    d = tmp_path/'model.safetensors'; d.mkdir()
    rc, out, err, secs = run('fit', '--out', d)
    one_line_error(rc, err, 'is a folder')


def test_fit_out_fifo_is_refused_not_a_hang(tmp_path):
    fifo = tmp_path/'pipe.safetensors'; os.mkfifo(fifo)          # opening a FIFO to write blocks until a reader comes
    rc, out, err, secs = run('fit', '--out', fifo, timeout=60)
    one_line_error(rc, err, 'not a regular file')


# ---- issue #22: a model is never destroyed by accident -------------------------------------------------------------

def _popen_cli(*args, env=None):
    cmd = [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())', *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def test_two_fits_to_one_out_exactly_one_wins(tmp_path):
    _mnist()
    out = tmp_path/'m.safetensors'
    ps = [_popen_cli('fit', *SMALL_FIT, '--seed', seed, '--out', out, '--quiet') for seed in (1, 2)]
    res = [(*p.communicate(timeout=600), p.returncode) for p in ps]
    assert sorted(r[2] for r in res) == [0, 2], res                 # exactly one succeeds ...
    _, err, _ = next(r for r in res if r[2] == 2)
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert 'saved by another run' in err or 'exists: replace it with --force' in err, err   # ... and the other says why
    winner = next(r for r in res if r[2] == 0)
    assert f"model saved to {out}" in winner[0]
    assert out.is_file() and not list(tmp_path.glob('.*tmp*'))       # one model, no temporary file


def test_sigterm_during_fit_is_one_line_and_leaves_nothing(tmp_path):
    _mnist()
    out, tmpdir = tmp_path/'m.safetensors', tmp_path/'tmp'
    tmpdir.mkdir()
    p = _popen_cli('fit', '--n-per-digit', 50, '--epochs', 5, '--out', out, '--quiet', env={'TMPDIR': str(tmpdir)})
    t0 = time.time()
    while not list(tmpdir.glob('mnist_subset_*')) and p.poll() is None and time.time() - t0 < 300: time.sleep(0.1)
    time.sleep(2)                                                    # into the training
    assert p.poll() is None, p.communicate()
    p.terminate()
    o, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err)
    assert 'stopped (SIGTERM); nothing was saved' in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob('.*tmp*'))    # no model and no half-written file beside it,
    assert not list(tmpdir.glob('mnist_subset_*'))                   # and no subset folder (torch's own caches may stay)


def test_diverging_lr_is_an_error_not_an_accuracy():
    _mnist()
    for method in ('sgd', 'gd'):
        rc, out, err, secs = run('train', '--lr', '1e39', '--method', method, '--epochs', 2)
        one_line_error(rc, err, 'diverged')
        assert 'validation accuracy' not in out


def test_huge_image(tmp_path, small_model):
    from PIL import Image
    big = tmp_path/'huge.png'
    Image.new('L', (8200, 8000)).save(big)                 # 66 megapixels of black, 65 KB as a PNG
    rc, out, err, secs = run('predict', big, '--model', small_model)
    one_line_error(rc, err, 'image too large')


# --- lead (issue 22) ---

def _digit_sgd() -> str:
    "The installed `digit-sgd` command, as a user runs it"
    exe = Path(sys.executable).parent/'digit-sgd'
    if not exe.exists(): pytest.skip("the digit-sgd command is not installed next to this Python")
    return str(exe)


def test_ctrl_c_while_serve_starts_is_one_line(tmp_path):
    "Ctrl-C at any moment of `serve`'s start (imports of torch, fastai, Gradio; loading the model): one line, exit 130"
    import signal
    sys.path.insert(0, str(Path(__file__).parent))
    from fuzz_inputs import small_models
    from digit_sgd.checks import free_port
    _, model, _ = small_models(tmp_path)
    for delay in (0.4, 1.0, 2.0, 4.0):
        p = subprocess.Popen([_digit_sgd(), 'serve', '--model', str(model), '--no-linear', '--port', str(free_port())],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay); p.send_signal(signal.SIGINT)
        o, err = p.communicate(timeout=120)
        assert p.returncode == 130 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, (delay, p.returncode, err)
        assert 'interrupted (Ctrl-C)' in err, err


@pytest.fixture(scope='module')
def fuzz_models(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from fuzz_inputs import small_models
    _mnist()
    return small_models(tmp_path_factory.mktemp('fuzz'))


def test_fuzzed_images_get_an_answer_or_one_line(fuzz_models):
    "200 mutants of valid images (PNG, 16-bit, palette, GIF, JPEG, TIFF, WebP, BMP, ...): an answer or one ValueError line"
    from fuzz_inputs import fuzz_images
    counts, bugs = fuzz_images(200, fuzz_models[2], seed=22)
    assert not bugs, bugs[:5]
    assert counts['ok'] > 20 and counts['refused'] > 20, counts     # the mutants reach both ends


def test_fuzzed_model_files_load_or_one_line(fuzz_models, tmp_path):
    """Mutants of model files (header fields of every JSON type, absurd numbers, NaN weights, bytes): 200 of the linear
    model's file, 60 of the resnet's (each costs a resnet18 build): each loads and predicts, or is one ValueError line"""
    from fuzz_inputs import fuzz_models as fuzz, seed_images
    img = seed_images(tmp_path)[0]
    for f, n in zip(fuzz_models[:2], (200, 60)):
        counts, bugs = fuzz(n, f, img, seed=22)
        assert not bugs, (f.name, bugs[:5])
        assert counts['ok'] > n//20 and counts['refused'] > n//4, counts


# --- data (issue 22) ---

def test_fifo_in_a_digit_folder_is_one_line_not_a_hang(tmp_path):
    "A FIFO in place of a PNG: `digit-sgd data` (and so every command that finds MNIST) names it, at once"
    def fifo(folder):
        f = sorted(folder.iterdir())[0]
        f.unlink(); os.mkfifo(f)                           # opening it to read would wait for a writer forever
    home = linked_home(tmp_path, {'training/4': fifo})
    folder = home/'data'/'mnist_png'/'training'/'4'
    rc, out, err, secs = run('data', '--offline', env={'FASTAI_HOME': str(home)}, timeout=120)
    one_line_error(rc, err, f"{folder/sorted(os.listdir(folder))[0]} is a FIFO (named pipe), not a PNG file: remove it")


def test_decode_pngs_refuses_a_fifo_without_waiting(tmp_path):
    "decode_pngs on a folder with a FIFO, or a link to one (mnist_subset's folders are links): a ValueError, no wait"
    png = next((_mnist()/'testing'/'4').iterdir())
    os.mkfifo(tmp_path/'pipe')
    for name in ('fifo', 'link'):
        (tmp_path/name).mkdir(); shutil.copy(png, tmp_path/name/png.name)
    os.mkfifo(tmp_path/'fifo'/'0.png'); os.symlink(tmp_path/'pipe', tmp_path/'link'/'0.png')
    code = ("import sys\nfrom digit_sgd.data import decode_pngs\nfor d in sys.argv[1:]:\n"
            "    try: decode_pngs(d); print('decoded', d)\n    except ValueError as e: print(e)")
    r = subprocess.run([sys.executable, '-c', code, tmp_path/'fifo', tmp_path/'link'], capture_output=True, text=True,
                       timeout=120)                       # a regression blocks in open(): the timeout fails the test
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{tmp_path/d/'0.png'} is a FIFO (named pipe), not a PNG file: remove it from the "
                                     f"data folder (MNIST's digit folders hold only PNG files)" for d in ('fifo', 'link')], r.stdout

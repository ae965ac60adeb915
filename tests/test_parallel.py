"""Process-level checks of digit_sgd.parallel_fit (chapter 12): bad input fails fast, a failing worker gives one line and leaves nothing behind."""
import sys
import psutil, pytest
from digit_sgd.parallel import max_nproc
from digit_sgd.parallel_fit import fit_digits_parallel, launch_workers

@pytest.mark.parametrize('kw,msg', [(dict(nproc=0), 'nproc must be a positive integer'),
                                    (dict(nproc=max_nproc(gpus=False) + 1), 'nproc must be at most'),
                                    (dict(nproc=2, lr=0), 'lr must be a finite number > 0'),
                                    (dict(nproc=2, bs=0), 'batch size must be a positive integer'),
                                    (dict(nproc=2, bs=1), 'smaller than nproc=2')])
def test_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg): fit_digits_parallel(**kw)

def test_worker_error_is_one_line_and_cleaned_up():
    token = 'digit-sgd-test-parallel-token'
    with pytest.raises(RuntimeError) as e:
        launch_workers(['--no-python', sys.executable, '-c', f'import os, time; os.environ["RANK"] == "1" and time.sleep(300); raise ValueError("{token}")'], 2, timeout=120)
    assert '\n' not in str(e.value) and f'ValueError: {token}' in str(e.value)
    assert not [p for p in psutil.process_iter(['cmdline']) if token in ' '.join(p.info['cmdline'] or [])]

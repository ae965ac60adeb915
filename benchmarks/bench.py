#!/usr/bin/env python
"""Speed benchmark for digit_sgd (a benchmark, not a test): each timed piece runs in a fresh Python process, the way a
notebook cell would run it (imports and data loading are not timed; the first call is). Prints target / measured /
pass per figure; `--json` also writes the results to benchmarks/out/.

    FASTAI_HOME=.fastai_home .venv/bin/python benchmarks/bench.py [--repeats 3] [--with-suite] [--json]

Each comparison runs as pairs of fresh processes in alternating order (A B, B A, A B, ...), idle and then with one
core kept busy by a bounded process of the benchmark's own (`digit_sgd.fast_sgd.busy_core`, stopped afterwards), and
reports the median, min and max of each side and of the ratio within each pair.

Figures (on `default_device()`: the GPU if there is one, else the CPU):
  a. fast SGD path vs the seed's loop: 2 epochs at bs 256 on 4 vs 5, --pairs pairs (default 5)
       idle: median >= 10x; one core busy: median >= 5x; never slower in any pair; accuracy >= 0.985
  b. fast vision path (chapter 6's `fast_vision_learner`: tensors, 1 channel, bs VISION_BS, bf16 where native,
     small-map convolutions, fused Adam) vs the seed's vision_learner recipe, one cycle on a subset
     (--subset images per digit; both time their first call, validation included), 3 pairs   target >= 4x
  c. loading the 4s and 5s from the tensor cache vs decoding their PNGs              target >= 10x
     (a warm load stats every PNG, so that an overwritten file is never served stale)
  d. (--with-suite) wall time of the whole notebook suite, `bash .ci/test`           target <= 300 s
  e. the fast SGD path's read rate (bytes of images per epoch / epoch time) against
     the machine's memory bandwidth (copying a large tensor)                          target >= 10%
"""
from __future__ import annotations
import argparse, contextlib, json, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------ pieces: each runs in its own process
def _data():
    from digit_sgd.data import load_pair
    from fastai.torch_core import default_device
    dev = default_device()
    x, y = [t.to(dev) for t in load_pair(5, 4)]
    valid = tuple(t.to(dev) for t in load_pair(5, 4, 'testing'))
    return dev, x, y, valid

def _fresh(dev):
    from fastai.torch_core import set_seed
    from digit_sgd.classifier import init_linear
    set_seed(42)
    return [p.to(dev).detach().requires_grad_() for p in init_linear()]

def piece_sgd(kind: str) -> dict:
    "2 epochs of SGD at bs 256 on 4 vs 5: the seed's loop (chapter 3's `train_sgd`) or `train_sgd_fast`"
    from digit_sgd.classifier import linear1, model_accuracy
    from digit_sgd.sgd import train_sgd, DEFAULT_LR
    from digit_sgd.fast_sgd import train_sgd_fast
    from digit_sgd.checks import sync
    dev, x, y, valid = _data()
    train = train_sgd if kind == 'seed' else train_sgd_fast
    params = _fresh(dev)
    sync(dev); t0 = time.perf_counter()
    train(linear1, params, x, y, DEFAULT_LR, 2, 256)
    sync(dev); secs = time.perf_counter() - t0
    return dict(seconds=secs, accuracy=model_accuracy(linear1, params, *valid), device=str(dev))

def piece_vision(kind: str, n_per_digit: int) -> dict:
    "One cycle of resnet18 on `n_per_digit` training images per digit: the seed's recipe (PNG folder) or the tensor path"
    import shutil, tempfile
    from fastai.torch_core import set_seed
    from digit_sgd.vision import mnist_subset
    from digit_sgd.deploy import seed_learner
    from digit_sgd.checks import sync
    from digit_sgd.fast_vision import tensor_dls, fast_vision_learner, VISION_LR
    n_valid = 50
    if kind == 'seed':
        tmp = Path(tempfile.mkdtemp(prefix='bench_'))
        sub = mnist_subset(n_per_digit, seed=42, dest=tmp/'mnist', n_valid=n_valid)
        learn = seed_learner(sub, seed=42)           # the seed's recipe, as `digit-sgd fit` runs it
        dls, lr = learn.dls, 0.1
    else:
        dls = tensor_dls(n_per_digit=n_per_digit, n_valid=n_valid, seed=42)
        set_seed(42)
        learn = fast_vision_learner(dls)
        lr = VISION_LR
    sync(); t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, lr)
    sync(); secs = time.perf_counter() - t0
    if kind == 'seed': shutil.rmtree(tmp)
    n_trained = len(dls.train)*dls.train.bs
    return dict(seconds=secs, n_trained=n_trained, n_valid=10*n_valid, ms_per_image=secs/n_trained*1e3,
                accuracy=float(learn.recorder.values[-1][2]), device=str(dls.device))

def piece_load(kind: str) -> dict:
    "The 4s and 5s of the training set as float tensors: decoded from their PNGs, or loaded from the tensor cache"
    from digit_sgd.data import load_digit
    for d in (4, 5): load_digit(d)                      # make sure the cache exists (not timed)
    t0 = time.perf_counter()
    n = sum(len(load_digit(d, cache=(kind == 'cache'))) for d in (4, 5))
    return dict(seconds=time.perf_counter() - t0, n_images=n)

def piece_memory() -> dict:
    "Memory bandwidth (a large copy) and the fast SGD path's read rate: bytes of images per epoch / epoch time"
    from digit_sgd.classifier import linear1
    from digit_sgd.sgd import DEFAULT_LR
    from digit_sgd.fast_sgd import train_sgd_fast
    from digit_sgd.profiling import memory_bandwidth
    dev, x, y, valid = _data()
    bw = memory_bandwidth(256, device=dev)
    epoch_secs = []
    for _ in range(5):
        h = train_sgd_fast(linear1, _fresh(dev), x, y, DEFAULT_LR, 2, 256)
        epoch_secs.append(min(h['seconds'][0], h['seconds'][1] - h['seconds'][0]))
    epoch_bytes = x.numel()*x.element_size()
    return dict(bandwidth=bw, epoch_bytes=epoch_bytes, epoch_seconds=min(epoch_secs),
                read_rate=epoch_bytes/min(epoch_secs), device=str(dev))

PIECES = {'sgd': piece_sgd, 'vision': piece_vision, 'load': piece_load, 'memory': piece_memory}

# ------------------------------------------------------------------ driver
def run_piece(name: str, *args) -> dict:
    "Run piece `name` in a fresh Python process and return its JSON result"
    cmd = [sys.executable, str(Path(__file__).resolve()), '--piece', name, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"piece {name} {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])

def repeat(name: str, *args, n: int) -> list:
    res = []
    for i in range(n):
        res.append(run_piece(name, *args))
        print(f"  {name} {' '.join(map(str, args))} #{i+1}: {res[-1]['seconds']:.3f} s", file=sys.stderr, flush=True)
    return res

def med(rs, key='seconds') -> float: return statistics.median(r[key] for r in rs)

def spread(rs, key='seconds', scale=1e3) -> str:
    "median (min-max) of `key` over results `rs`, times `scale`"
    v = [r[key]*scale for r in rs]
    return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"

def pairs(a: tuple, b: tuple, n: int, label: str) -> tuple:
    "`n` pairs of fresh-process runs of pieces `a` and `b`, in alternating order (a b, b a, ...): two lists of results"
    ra, rb = [], []
    for i in range(n):
        order = ((a, ra), (b, rb)) if i % 2 == 0 else ((b, rb), (a, ra))
        for piece, res in order:
            res.append(run_piece(*piece))
            print(f"  {label}: {' '.join(map(str, piece))} #{len(res)}: {res[-1]['seconds']:.3f} s", file=sys.stderr, flush=True)
    return ra, rb

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeats', type=int, default=3, help='fresh processes per timed piece of figure c (median is reported)')
    ap.add_argument('--pairs', type=int, default=5, help='pairs of fresh processes for figure a, each load (default 5)')
    ap.add_argument('--subset', type=int, default=300, help='training images per digit for the vision figure (default 300)')
    ap.add_argument('--with-suite', action='store_true', help='also time the whole notebook suite (bash .ci/test)')
    ap.add_argument('--json', action='store_true', help='write the results to benchmarks/out/')
    ap.add_argument('--piece', nargs='+', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.piece:                                          # inside a fresh process: run one piece, print JSON
        import digit_sgd.data                            # silences fastai's torch.jit warning before fastai loads
        name, *args = a.piece
        args = [int(v) if v.isdigit() else v for v in args]
        print(json.dumps(PIECES[name](*args)))
        return
    if a.repeats < 1 or a.pairs < 1 or a.subset < 103:
        ap.error("--repeats and --pairs must be >= 1, and --subset >= 103 (two batches of VISION_BS)")

    t_start = time.perf_counter()
    rows, results = [], {}
    from digit_sgd.fast_sgd import busy_core
    print(f"running pieces in fresh processes, pairs in alternating order...", file=sys.stderr)
    for load in ('idle', 'one core busy'):
        with (busy_core(600) if load != 'idle' else contextlib.nullcontext()):
            seed, fast = pairs(('sgd', 'seed'), ('sgd', 'fast'), a.pairs, load)
        device = fast[0]['device']
        ratios = [s['seconds']/f['seconds'] for s, f in zip(seed, fast)]
        acc = min(r['accuracy'] for r in fast + seed)
        target = 10 if load == 'idle' else 5
        results[f'a, {load}'] = dict(seed=seed, fast=fast, ratios=ratios)
        rows.append((f'a. fast SGD vs seed loop, {load} ({a.pairs} pairs)',
                     f'median >= {target}x, every pair > 1x, acc >= 0.985',
                     f"median {statistics.median(ratios):.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f}); "
                     f"seed {spread(seed)} ms, fast {spread(fast)} ms; acc {acc:.4f}",
                     statistics.median(ratios) >= target and min(ratios) > 1 and acc >= 0.985))

    for load in ('idle', 'one core busy'):
        with (busy_core(1800) if load != 'idle' else contextlib.nullcontext()):
            vs, vf = pairs(('vision', 'seed', a.subset), ('vision', 'fast', a.subset), 3, load)
        ratios = [s['ms_per_image']/f['ms_per_image'] for s, f in zip(vs, vf)]
        results[f'b, {load}'] = dict(seed=vs, fast=vf, ratios=ratios)
        rows.append((f'b. fast vision vs seed recipe, {load} ({10*a.subset} images, 1 cycle, 3 pairs)', 'median >= 4x',
                     f"median {statistics.median(ratios):.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f}); "
                     f"seed {spread(vs, 'ms_per_image', 1)} ms/image, fast {spread(vf, 'ms_per_image', 1)} ms/image",
                     statistics.median(ratios) >= 4))

    dec, cache = repeat('load', 'decode', n=a.repeats), repeat('load', 'cache', n=a.repeats)
    ratio = med(dec)/med(cache)
    results['c'] = dict(decode=dec, cache=cache, ratio=ratio)
    rows.append(('c. tensor cache vs PNG decode (4s and 5s, staleness check included)', '>= 10x',
                 f"{ratio:.0f}x (decode {spread(dec, scale=1)} s, cache {spread(cache)} ms)", ratio >= 10))

    if a.with_suite:
        t0 = time.perf_counter()
        p = subprocess.run(['bash', '.ci/test'], cwd=ROOT, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        results['d'] = dict(seconds=secs, returncode=p.returncode, tail=p.stdout[-2000:])
        rows.append(('d. nbdev_test, whole suite (bash .ci/test)', '<= 300 s',
                     f"{secs:.0f} s ({'passed' if p.returncode == 0 else 'FAILED'})", secs <= 300 and p.returncode == 0))
    else: rows.append(('d. nbdev_test, whole suite (bash .ci/test)', '<= 300 s', 'skipped (--with-suite)', None))

    mem = run_piece('memory')
    frac = mem['read_rate']/mem['bandwidth']
    results['e'] = dict(mem, fraction=frac)
    rows.append(('e. fast SGD read rate vs memory bandwidth', '>= 10%',
                 f"{frac:.0%} ({mem['read_rate']/1e9:.1f} of {mem['bandwidth']/1e9:.1f} GB/s; "
                 f"{mem['epoch_seconds']*1e3:.1f} ms/epoch)", frac >= 0.10))

    import torch
    from digit_sgd.checks import machine_info
    head = (f"digit_sgd benchmark on {device}: {machine_info(device)}; torch {torch.__version__}; "
            f"every piece in a fresh process")
    w = [max(len(str(r[i])) for r in rows + [('figure', 'target', 'measured', 'pass')]) for i in range(3)]
    print(head)
    print(f"{'figure':<{w[0]}}  {'target':<{w[1]}}  {'measured':<{w[2]}}  pass")
    for f, t, m, ok in rows:
        print(f"{f:<{w[0]}}  {t:<{w[1]}}  {m:<{w[2]}}  {'-' if ok is None else 'yes' if ok else 'NO'}")
    print(f"({time.perf_counter() - t_start:.0f} s)")
    if a.json:
        out = ROOT/'benchmarks'/'out'
        out.mkdir(parents=True, exist_ok=True)
        f = out/f"bench-{device.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        f.write_text(json.dumps(dict(header=head, rows=[dict(figure=r[0], target=r[1], measured=r[2], passed=r[3])
                                                        for r in rows], results=results), indent=1))
        print(f"wrote {f.relative_to(ROOT)}")

if __name__ == '__main__': main()

"""Mutation fuzzing of what users hand to `predict` and `load_model`: image files and model files.

Every mutant must end in one of two ways: an answer, or a `ValueError` with one line (what the CLI prints). Anything
else (another exception, a traceback, a hang) is a bug. `tests/test_reliability.py` runs a few hundred mutants of
each kind; run this file to try many more:

    FASTAI_HOME=... .venv/bin/python tests/fuzz_inputs.py 5000
"""
from __future__ import annotations
import io, json, math, random, signal, struct, sys, tempfile, zlib
from collections import Counter
from pathlib import Path
import numpy as np
from PIL import Image

HANG_S = 20          # a mutant that takes longer than this counts as a hang


class _Hang(Exception): pass


def _alarm(signum, frame): raise _Hang()


def seed_images(folder: Path) -> list[Path]:
    "Valid images of a digit in many formats and modes: the seeds the image mutants start from"
    from digit_sgd.data import mnist_path
    f = sorted((mnist_path()/'testing'/'7').glob('*.png'))[0]
    g = Image.open(f).convert('L')
    a = np.asarray(g)
    big = g.resize((84, 84))
    ims = {'mnist.png': None, 'rgb.png': big.convert('RGB'), 'rgba.png': big.convert('RGBA'), 'la.png': big.convert('LA'),
           'p.png': big.convert('P'), 'p_trns.gif': big.convert('P'), 'bits1.png': big.convert('1'),
           'i16.png': Image.fromarray((a.astype(np.uint16)*257)), 'photo.jpg': big.convert('RGB'),
           'img.bmp': big, 'img.tiff': big.convert('RGB'), 'img.webp': big.convert('RGB'), 'cmyk.jpg': big.convert('CMYK'),
           'img.tga': big.convert('RGB'), 'p.tga': big.convert('P'), 'img.pcx': big.convert('P'), 'img.sgi': big,
           'img.ppm': big.convert('RGB'), 'img.ico': big.convert('RGBA'), 'img.im': big, 'img.msp': big.convert('1'),
           'img.xbm': big.convert('1'), 'img.dds': big.convert('RGBA'), 'f.tiff': big.convert('F'),
           'i16.tiff': Image.fromarray((a.astype(np.uint16)*257)), 'p.bmp': big.convert('P'), 'anim.gif': None}
    out = []
    for name, im in ims.items():
        p = folder/name
        if name == 'anim.gif': big.save(p, save_all=True, append_images=[big.rotate(30), big.rotate(60)], duration=50)
        elif im is None: p.write_bytes(f.read_bytes())
        elif name == 'p_trns.gif': im.save(p, transparency=0)
        else: im.save(p)
        out.append(p)
    return out


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    "One random mutation of a file's bytes: flips, a cut, a copied or inserted run, or a PNG header field rewritten"
    b = bytearray(data)
    kind = rng.choice(['flip', 'flip', 'cut', 'dup', 'insert', 'ihdr', 'zero'])
    if kind == 'flip':
        for _ in range(rng.randint(1, 12)): b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 'cut': b = b[:rng.randrange(1, len(b))]
    elif kind == 'dup':
        i, n = rng.randrange(len(b)), rng.randint(1, 64)
        b[i:i] = b[i:i+n]
    elif kind == 'insert':
        i = rng.randrange(len(b)); b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif kind == 'zero':
        i = rng.randrange(len(b)); b[i:i+rng.randint(1, 64)] = b'\0'*len(b[i:i+64])
    elif kind == 'ihdr' and b[:8] == b'\x89PNG\r\n\x1a\n':       # width, height, bit depth, colour type: CRC fixed
        field = rng.choice(['w', 'h', 'depth', 'ctype', 'interlace'])
        off, val = {'w': (16, struct.pack('>I', rng.choice([0, 1, 2**31 - 1, rng.randrange(1, 5000)]))),
                    'h': (20, struct.pack('>I', rng.choice([0, 1, 2**31 - 1, rng.randrange(1, 5000)]))),
                    'depth': (24, bytes([rng.choice([0, 1, 2, 3, 4, 8, 16, 32, 255])])),
                    'ctype': (25, bytes([rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 255])])),
                    'interlace': (28, bytes([rng.choice([0, 1, 2, 255])]))}[field]
        b[off:off+len(val)] = val
        b[29:33] = struct.pack('>I', zlib.crc32(bytes(b[12:29])) & 0xffffffff)
    return bytes(b)


def _one_line_error(e: BaseException) -> bool:
    return isinstance(e, ValueError) and str(e).strip() != '' and '\n' not in str(e).strip()


def run_mutant(fn) -> str:
    "'ok', 'refused' (a one-line ValueError) or 'BUG: ...' for `fn()`, with a hang counted as a bug"
    old = signal.signal(signal.SIGALRM, _alarm); signal.alarm(HANG_S)
    try:
        fn(); return 'ok'
    except _Hang: return f'BUG: hang (over {HANG_S} s)'
    except Exception as e:
        return 'refused' if _one_line_error(e) else f'BUG: {type(e).__name__}: {str(e)[:200]!r}'
    finally:
        signal.alarm(0); signal.signal(signal.SIGALRM, old)


def fuzz_images(n: int, model, seed: int = 0) -> tuple[Counter, list]:
    "`n` image mutants through `to_mnist_image` and `model.predict`: the count of each outcome, and the bugs"
    from digit_sgd.deploy import predict_digits
    rng, counts, bugs = random.Random(seed), Counter(), []
    with tempfile.TemporaryDirectory() as d:
        seeds = [(p.suffix, p.read_bytes()) for p in seed_images(Path(d))]
        for i in range(n):
            suffix, data = rng.choice(seeds)
            for _ in range(rng.choice([1, 1, 1, 2, 3])): data = mutate_bytes(data, rng)
            p = Path(d)/f'mutant{suffix}'
            p.write_bytes(data)
            r = run_mutant(lambda: predict_digits([p], model))
            counts[r if not r.startswith('BUG') else 'bug'] += 1
            if r.startswith('BUG'): bugs.append((i, suffix, r))
    return counts, bugs


def _json_values(rng: random.Random):
    return rng.choice([None, True, False, 0, 1, -1, 3, 10, 255, 2**63, -2**63, 1.5, 0.0, -0.0, 1e308, 5e-324, -1e308,
                       float('nan'), float('inf'), float('-inf'), '', 'x', '1', 'resnet18', 'digit_net', 'linear',
                       'sigmoid', 'softmax', [], [1], [0.5, 0.5, 0.5], [None], ['a'], {}, {'a': 1}, [[1]], {'n_out': 10.0},
                       {'kind': ['linear'], 'n_hidden': 1}])


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items(): yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj): yield from _paths(v, prefix + (i,))


def mutate_meta(meta: dict, rng: random.Random) -> dict:
    "`meta` (a model file's JSON description) with one field replaced by a value of another type, removed, or added"
    m = json.loads(json.dumps(meta))
    path = rng.choice([p for p in _paths(m) if p])
    parent = m
    for k in path[:-1]: parent = parent[k]
    kind = rng.choice(['replace', 'replace', 'replace', 'delete', 'add'])
    if kind == 'replace': parent[path[-1]] = _json_values(rng)
    elif kind == 'delete':
        if isinstance(parent, dict): del parent[path[-1]]
        else: parent.pop(path[-1])
    elif isinstance(parent, dict): parent[rng.choice(['extra', 'height', 'n_out', 'kind', 'mean'])] = _json_values(rng)
    else: parent.append(_json_values(rng))
    return m


def fuzz_models(n: int, model_file: Path, image: Path, seed: int = 0) -> tuple[Counter, list]:
    "`n` mutants of `model_file` (its JSON description, its tensors, its raw bytes) through `load_model` and `predict`"
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file, load_file
    from digit_sgd.deploy import load_model, predict_digits
    rng, counts, bugs = random.Random(seed), Counter(), []
    with safe_open(model_file, 'pt') as f: md = f.metadata()
    meta, tensors, raw = json.loads(md['digit_sgd']), load_file(model_file), model_file.read_bytes()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)/'mutant.safetensors'
        for i in range(n):
            kind = rng.choice(['meta', 'meta', 'meta', 'tensors', 'bytes'])
            if kind == 'meta':
                m = meta
                for _ in range(rng.choice([1, 1, 2])): m = mutate_meta(m, rng)
                save_file(tensors, p, metadata={'digit_sgd': json.dumps(m)})
            elif kind == 'tensors':
                t = {k: v.clone() for k, v in tensors.items()}
                how = rng.choice(['nan', 'inf', 'shape', 'dtype', 'drop', 'extra', 'huge'])
                k = rng.choice(sorted(k for k in t if how not in ('nan', 'inf', 'huge') or t[k].is_floating_point()))
                if how == 'nan': t[k].view(-1)[rng.randrange(t[k].numel())] = float('nan')
                elif how == 'inf': t[k].view(-1)[0] = float('inf')
                elif how == 'huge': t[k].fill_(3e38)
                elif how == 'shape': t[k] = t[k].reshape(-1)[:max(1, t[k].numel() - 1)].clone()
                elif how == 'dtype': t[k] = t[k].to(rng.choice([torch.float16, torch.int64, torch.bfloat16, torch.uint8]))
                elif how == 'drop': del t[k]
                else: t['extra.weight'] = torch.zeros(3)
                save_file(t, p, metadata=md)
            else: p.write_bytes(mutate_bytes(raw, rng) if rng.random() < 0.5 else
                                raw[:8] + mutate_bytes(raw[8:8 + int.from_bytes(raw[:8], 'little')], rng) +
                                raw[8 + int.from_bytes(raw[:8], 'little'):])
            def use():
                mdl = load_model(p)
                res = predict_digits([image], mdl)
                for digit, prob in res:
                    if digit is not None and not (0 <= prob <= 1):   # an answer must be a probability, not nan
                        raise AssertionError(f"predicted {digit} with probability {prob}")
            r = run_mutant(use)
            counts[r if not r.startswith('BUG') else 'bug'] += 1
            if r.startswith('BUG'): bugs.append((i, kind, r))
    return counts, bugs


def small_models(folder: Path) -> tuple:
    "A linear 4s-vs-5s model file (chapter 4's net) and a ten-digit resnet18 with fresh weights, for the fuzzers"
    from fastai.torch_core import set_seed
    from digit_sgd.learner import digit_net
    from digit_sgd.deploy import DigitModel, MODEL_FORMAT, MODEL_VERSION, _arch_builders
    set_seed(0)
    lin = DigitModel(digit_net('linear'), dict(format=MODEL_FORMAT, version=MODEL_VERSION, arch='digit_net',
                     arch_args=dict(kind='linear', n_hidden=50), classes=[5, 4], output='sigmoid',
                     input=dict(height=28, width=28, channels=1, flatten=True, scale=255, mean=None, std=None,
                                prepare='to_mnist_image')))
    res = DigitModel(_arch_builders()['resnet18'](n_out=10), dict(format=MODEL_FORMAT, version=MODEL_VERSION,
                     arch='resnet18', arch_args=dict(n_out=10), classes=list(range(10)), output='softmax',
                     input=dict(height=28, width=28, channels=3, flatten=False, scale=255, mean=[0.485, 0.456, 0.406],
                                std=[0.229, 0.224, 0.225], prepare='to_mnist_image')))
    return lin.save(folder/'linear.safetensors'), res.save(folder/'resnet.safetensors'), lin


if __name__ == '__main__':
    import warnings
    warnings.filterwarnings('ignore')
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as d:
        lin_file, res_file, lin = small_models(Path(d))
        img = seed_images(Path(d))[0]
        c, bugs = fuzz_images(n, lin, seed=1)
        print(f"images: {n} mutants: {dict(c)}")
        for b in bugs[:20]: print('  ', b)
        for name, f in (('linear', lin_file), ('resnet18', res_file)):
            c, bugs = fuzz_models(n, f, img, seed=2)
            print(f"model files ({name}): {n} mutants: {dict(c)}")
            for b in bugs[:20]: print('  ', b)

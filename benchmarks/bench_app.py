#!/usr/bin/env python
"""Latency benchmark of the web app (issue #15; a benchmark, not a test): one prediction's round trip, upload to
label, with the model loaded once.

    FASTAI_HOME=.fastai_home .venv/bin/python benchmarks/bench_app.py --model model.safetensors [--n 30] [--json]

Starts `digit-sgd serve --model MODEL` on a free port of 127.0.0.1 (without the linear model, unless --linear), then
measures three ways, idle and then with one core kept busy by a bounded process (`digit_sgd.fast_sgd.busy_core`):

  server  `read_digit` alone, in this process (prepare the image + the network's forward pass)
  http    gradio_client: upload a real MNIST testing PNG and wait for the answer (what a script or Space client sees)
  browser headless Chromium (Playwright): choose the file in the page's upload, wait until the label shows the digit
          (what a user sees; the page also sends the upload's preview back, so this is the slowest)

The files cycle through the first testing PNG of each digit; the three ways run in turn, round after round, so that
a slow patch of the machine hits all of them. Reports median, min and max in ms per way and load, and the target:
the browser's median about 100 ms or less for the resnet on this CPU. Without --model it trains one first (about a
minute: 300 images per digit, 2 epochs). Stops the server with Ctrl-C (SIGINT) at the end.
"""
from __future__ import annotations
import argparse, json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())']
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-quic']
TARGET_MS = 100


def start_server(model: Path, linear: Path | None):
    from digit_sgd.checks import free_port
    port = free_port()
    args = ['serve', '--model', str(model), '--port', str(port)] + (['--linear', str(linear)] if linear else ['--no-linear'])
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    for _ in range(600):
        if proc.poll() is not None: sys.exit(f"digit-sgd serve exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2): return proc, url
        except OSError: time.sleep(0.25)
    proc.kill(); sys.exit("digit-sgd serve did not start in 150 s")


def summary(ms: list) -> dict:
    return dict(median=round(statistics.median(ms), 1), min=round(min(ms), 1), max=round(max(ms), 1), n=len(ms))


def measure(url: str, model, files: list, n: int) -> dict:
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright
    from digit_sgd.app import read_digit
    client = Client(url, verbose=False)
    times = dict(server=[], http=[], browser=[])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=CHROME_ARGS, headless=True)
        page = browser.new_page()
        page.goto(url); page.wait_for_load_state('networkidle')
        page.get_by_role('tab', name='Upload').click()
        for i in range(n + 2):                                  # two warm-up rounds, not counted
            d, f = files[i % len(files)]
            t0 = time.perf_counter(); read_digit(f, model); t_server = time.perf_counter() - t0
            t0 = time.perf_counter(); client.predict(handle_file(str(f)), api_name='/read_upload'); t_http = time.perf_counter() - t0
            clear = page.locator('#upload button[aria-label="Clear"]')
            if clear.count():
                clear.click()
                page.wait_for_function("() => !document.querySelector('#probs [data-testid=\"label-output-value\"]')")
            t0 = time.perf_counter()
            page.locator('#upload input[type=file]').set_input_files(str(f))
            page.wait_for_function("() => document.querySelector('#probs [data-testid=\"label-output-value\"]')",
                                   timeout=30_000, polling='raf')
            t_browser = time.perf_counter() - t0
            if i >= 2:
                for k, t in (('server', t_server), ('http', t_http), ('browser', t_browser)): times[k].append(1000*t)
        browser.close()
    return {k: summary(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', type=Path, help='a model from `digit-sgd fit` (default: train a small one first)')
    ap.add_argument('--linear', type=Path, help="the linear 4s-vs-5s model's file (default: none)")
    ap.add_argument('--n', type=int, default=30, help='measured rounds per load (default: 30)')
    ap.add_argument('--json', action='store_true', help='also write benchmarks/out/bench_app.json')
    a = ap.parse_args()
    if a.n < 1: ap.error('--n must be >= 1')
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    from digit_sgd.data import mnist_path
    from digit_sgd.checks import machine_info
    from digit_sgd.deploy import load_model, fit_digits
    from digit_sgd.fast_sgd import busy_core
    tmp = tempfile.TemporaryDirectory(prefix='digit_sgd_bench_app_')
    if a.model is None:
        print('training a small model first (300 images per digit, 2 epochs) ...', flush=True)
        a.model = Path(fit_digits(epochs=2, out=Path(tmp.name)/'m.safetensors', n_per_digit=300, bs=32, n_valid=30,
                                  progress=False)['path'])
    model = load_model(a.model)
    testing = mnist_path(download=False)/'testing'
    files = [(d, sorted((testing/str(d)).iterdir())[0]) for d in range(10)]
    proc, url = start_server(a.model, a.linear)
    res = {}
    try:
        res['idle'] = measure(url, model, files, a.n)
        with busy_core(600): res['one core busy'] = measure(url, model, files, a.n)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        tmp.cleanup()
    info = machine_info()
    print(f"on {info}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'load':<15}{'way':<9}{'median ms':>10}{'min':>8}{'max':>8}")
    for load, r in res.items():
        for way, s in r.items(): print(f"{load:<15}{way:<9}{s['median']:>10}{s['min']:>8}{s['max']:>8}")
    ok = res['idle']['browser']['median'] <= TARGET_MS
    print(f"target: upload -> label shown in the browser, median <= {TARGET_MS} ms idle: "
          f"{res['idle']['browser']['median']} ms -> {'pass' if ok else 'MISSED'}")
    if a.json:
        out = ROOT/'benchmarks'/'out'; out.mkdir(exist_ok=True)
        (out/'bench_app.json').write_text(json.dumps(dict(machine=info, results=res, target_ms=TARGET_MS), indent=1))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

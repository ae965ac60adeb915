#!/usr/bin/env python
"""Latency and load benchmark of the web app (issues #15 and #22; a benchmark, not a test): one prediction's round
trip, upload to label, with the model loaded once; then many clients at once.

    FASTAI_HOME=.fastai_home .venv/bin/python benchmarks/bench_app.py --model model.safetensors [--n 30] [--json]
    FASTAI_HOME=.fastai_home .venv/bin/python benchmarks/bench_app.py --model M --only-concurrent [--clients 50 --rounds 4]

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

Then (issue #22) --clients gradio_client clients at once (default 50, each its own Client, as 50 users), each asking
--rounds times (default 4): upload the first testing PNG of a digit, wait for the answer, download the answer's image
files, as the page does. The same few images at once are the hard case: their answers are the same files. Reports the
requests that failed out of all, the server's "Response content shorter than Content-Length" lines (a file sent cut
short), the median and max seconds per request, and what the server left in its temporary folder (GRADIO_TEMP_DIR,
a fresh one for the benchmark) after Ctrl-C. Targets: no request failed, no response cut short, no file left.
"""
from __future__ import annotations
import argparse, collections, json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())']
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-quic']
TARGET_MS = 100


def start_server(model: Path, linear: Path | None, log, temp_dir: Path):
    "`digit-sgd serve` on a free port, its output in `log`, its temporary files in `temp_dir` (GRADIO_TEMP_DIR)"
    from digit_sgd.checks import free_port
    port = free_port()
    args = ['serve', '--model', str(model), '--port', str(port)] + (['--linear', str(linear)] if linear else ['--no-linear'])
    proc = subprocess.Popen(CLI + args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, 'GRADIO_TEMP_DIR': str(temp_dir)})
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


def concurrent(url: str, files: list, clients: int, rounds: int) -> dict:
    "`clients` gradio_client clients at once, `rounds` requests each (upload, answer, the answer's files downloaded)"
    from gradio_client import Client, handle_file
    with ThreadPoolExecutor(clients) as ex: cs = list(ex.map(lambda _: Client(url, verbose=False), range(clients)))
    def ask(i):
        out = []
        for k in range(rounds):
            f = files[(i + k) % len(files)][1]
            t0 = time.perf_counter()
            try:
                a = cs[i].predict(handle_file(str(f)), api_name='/read_upload')
                for p in (a[0], a[2]):                      # the downloaded upload and the 28x28 image seen
                    if p is None or os.path.getsize(p) == 0: raise RuntimeError('an empty answer file')
                out.append(('ok', time.perf_counter() - t0))
            except Exception as e: out.append((type(e).__name__, time.perf_counter() - t0))
        return out
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex: res = [r for rs in ex.map(ask, range(clients)) for r in rs]
    secs = [t for _, t in res]
    return dict(total=len(res), failed=sum(k != 'ok' for k, _ in res), errors=dict(collections.Counter(k for k, _ in res if k != 'ok')),
                median_s=round(statistics.median(secs), 2), max_s=round(max(secs), 2), seconds=round(time.perf_counter() - t0, 1))


def left_in(folder: Path) -> dict:
    "The files (not the empty folders) under `folder`, and their bytes"
    fs = [p for p in folder.rglob('*') if p.is_file()]
    return dict(files=len(fs), bytes=sum(p.stat().st_size for p in fs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', type=Path, help='a model from `digit-sgd fit` (default: train a small one first)')
    ap.add_argument('--linear', type=Path, help="the linear 4s-vs-5s model's file (default: none)")
    ap.add_argument('--n', type=int, default=30, help='measured rounds per load (default: 30)')
    ap.add_argument('--json', action='store_true', help='also write benchmarks/out/bench_app.json')
    ap.add_argument('--clients', type=int, default=50, help='clients at once (default: 50)')
    ap.add_argument('--rounds', type=int, default=4, help='requests per client (default: 4)')
    ap.add_argument('--only-concurrent', action='store_true', help='skip the latency part (no browser needed)')
    a = ap.parse_args()
    if a.n < 1 or a.clients < 1 or a.rounds < 1: ap.error('--n, --clients and --rounds must be >= 1')
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    tmp = tempfile.TemporaryDirectory(prefix='digit_sgd_bench_app_')
    server_tmp, client_tmp = Path(tmp.name)/'server', Path(tmp.name)/'client'
    os.environ['GRADIO_TEMP_DIR'] = str(client_tmp)          # gradio_client's downloads, apart from the server's files
    from digit_sgd.data import mnist_path
    from digit_sgd.checks import machine_info
    from digit_sgd.deploy import load_model, fit_digits
    from digit_sgd.fast_sgd import busy_core
    if a.model is None:
        print('training a small model first (300 images per digit, 2 epochs) ...', flush=True)
        a.model = Path(fit_digits(epochs=2, out=Path(tmp.name)/'m.safetensors', n_per_digit=300, bs=32, n_valid=30,
                                  progress=False)['path'])
    model = load_model(a.model)
    testing = mnist_path(download=False)/'testing'
    files = [(d, sorted((testing/str(d)).iterdir())[0]) for d in range(10)]
    log_path = Path(tmp.name)/'serve.log'
    log = open(log_path, 'w')
    load0 = os.getloadavg()[0]
    proc, url = start_server(a.model, a.linear, log, server_tmp)
    res, conc = {}, {}
    try:
        if not a.only_concurrent:
            res['idle'] = measure(url, model, files, a.n)
            with busy_core(600): res['one core busy'] = measure(url, model, files, a.n)
        conc = concurrent(url, files, a.clients, a.rounds)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try: proc.wait(60)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        server_log = log_path.read_text()
        left = left_in(server_tmp)
        tmp.cleanup()
    conc.update(cut_short=server_log.count('Response content shorter than Content-Length'), left_after_stop=left,
                exit_status=proc.returncode)
    info = machine_info()
    print(f"on {info}; load average before: {load0:.2f}")
    ok = True
    if res:
        print(f"{'load':<15}{'way':<9}{'median ms':>10}{'min':>8}{'max':>8}")
        for load, r in res.items():
            for way, s in r.items(): print(f"{load:<15}{way:<9}{s['median']:>10}{s['min']:>8}{s['max']:>8}")
        ok = res['idle']['browser']['median'] <= TARGET_MS
        print(f"target: upload -> label shown in the browser, median <= {TARGET_MS} ms idle: "
              f"{res['idle']['browser']['median']} ms -> {'pass' if ok else 'MISSED'}")
    print(f"{a.clients} clients at once, {a.rounds} requests each: {conc['failed']} of {conc['total']} failed "
          f"{conc['errors'] or ''}; the server cut {conc['cut_short']} responses short; per request median "
          f"{conc['median_s']} s, max {conc['max_s']} s; {conc['seconds']} s in all")
    print(f"after Ctrl-C (exit status {conc['exit_status']}): {left['files']} files ({left['bytes']:,} bytes) left in the "
          f"server's temporary folder")
    ok_conc = conc['failed'] == 0 and conc['cut_short'] == 0 and left['files'] == 0
    print(f"target: none failed, none cut short, nothing left -> {'pass' if ok_conc else 'MISSED'}")
    if a.json:
        out = ROOT/'benchmarks'/'out'; out.mkdir(exist_ok=True)
        (out/'bench_app.json').write_text(json.dumps(dict(machine=info, results=res, target_ms=TARGET_MS,
                                                          concurrent=conc), indent=1))
    return 0 if ok and ok_conc else 1


if __name__ == '__main__':
    sys.exit(main())

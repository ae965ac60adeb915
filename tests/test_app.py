"""The web app (issue #15) in a real browser: `digit-sgd serve`, driven by headless Chromium through Playwright.

What a user does, step by step, with a screenshot of each step in tests/screenshots/app/ (git-ignored):

- a model is trained for the test with `digit-sgd fit` (300 images per digit, 2 epochs; about 1-2 minutes), and
  `digit-sgd serve --model ... --port <free>` is started in its own process group, as a user starts it;
- the page loads, with no request to any host but 127.0.0.1;
- a vertical stroke drawn with the mouse on the sketchpad is read as a 1; the 4s-vs-5s tab then shows the score;
- clearing the canvas gives the note that asks for a drawing;
- real MNIST testing PNGs of a few digits, uploaded, are read as their digits;
- a file that is not an image, and a 66-megapixel image, get their one-line message on the page;
- 50 requests at once, from 50 HTTP clients (gradio_client) on 127.0.0.1, all get whole answers (issue #22: the
  answer's image files were sometimes cut short or empty), the same as asked one at a time;
- an upload over the 10 MB cap is refused with one line (HTTP 413) and stores nothing (issue #22);
- Ctrl-C (SIGINT) stops the server: it exits with status 0, the port is free, no process of it is left, and its
  uploads and answers are gone from its temporary folder (GRADIO_TEMP_DIR, one of the test's own).

Run: FASTAI_HOME=/work/main/.fastai_home .venv/bin/python -m pytest tests/test_app.py -v   (or `bash .ci/browser`)
Needs the `app` extra (Gradio), playwright, Debian's chromium at /usr/bin/chromium and MNIST in $FASTAI_HOME.
DIGIT_SGD_APP_MODEL=path uses an existing model file instead of training one.
"""
import os, signal, socket, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO/'tests'/'screenshots'/'app'
CHROMIUM = os.environ.get('DIGIT_SGD_CHROMIUM', '/usr/bin/chromium')
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-quic']
CLI = [sys.executable, '-c', 'import sys; from digit_sgd.cli import main; sys.exit(main())']
DIGITS = (0, 1, 2, 3, 7)                 # one real testing PNG each (the first in file-name order)
DRAW_TIMEOUT = 120_000                   # ms: headless Chromium draws the sketchpad's WebGL canvas in software


def _mnist():
    from digit_sgd.data import mnist_path
    return mnist_path(download=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _pids_in_group(pgid: int) -> list:
    "Processes still alive in process group `pgid` (zombies excluded)"
    out = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            stat = (d/'stat').read_text()
            fields = stat[stat.rindex(')') + 2:].split()
            if int(fields[2]) == pgid and fields[0] != 'Z': out.append(int(d.name))
        except (OSError, ValueError, IndexError): pass
    return out


@pytest.fixture(scope='module')
def tmp():
    with tempfile.TemporaryDirectory(prefix='digit_sgd_app_test_') as d: yield Path(d)


@pytest.fixture(scope='module')
def model_file(tmp):
    given = os.environ.get('DIGIT_SGD_APP_MODEL')
    if given: return Path(given)
    out = tmp/'model.safetensors'
    r = subprocess.run(CLI + ['fit', '--epochs', '2', '--n-per-digit', '300', '--bs', '32', '--out', str(out), '--quiet'],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    return out


@pytest.fixture(scope='module')
def server(model_file, tmp):
    "`digit-sgd serve` in its own process group on a free port; stopped with SIGINT (Ctrl-C) by the last test"
    port = _free_port()
    log = open(tmp/'serve.log', 'w+')
    temp_dir = tmp/'gradio_tmp'                  # the server's GRADIO_TEMP_DIR: its own folder is made inside it
    proc = subprocess.Popen(CLI + ['serve', '--model', str(model_file), '--port', str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False', 'GRADIO_TEMP_DIR': str(temp_dir)})
    url = f'http://127.0.0.1:{port}/'
    import urllib.request
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None: break
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: break
        except OSError: time.sleep(0.5)
    else: pass
    if proc.poll() is not None or time.time() >= deadline:
        log.seek(0); proc.kill(); pytest.fail(f"digit-sgd serve did not start:\n{log.read()[-3000:]}")
    info = dict(proc=proc, port=port, url=url, log=log, pgid=os.getpgid(proc.pid), temp_dir=temp_dir)
    yield info
    if proc.poll() is None:                      # a test failed before the shutdown test: clean up anyway
        os.killpg(info['pgid'], signal.SIGKILL); proc.wait(10)
    log.close()


@pytest.fixture(scope='module')
def page(server):
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.fail('playwright is missing: pip install -e ".[dev]"')
    if not os.path.exists(CHROMIUM): pytest.fail(f'no browser at {CHROMIUM}: apt-get install -y chromium')
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        pg = browser.new_page(viewport={'width': 1280, 'height': 1000})
        pg.outside = []
        pg.on('request', lambda r: pg.outside.append(r.url)
              if not r.url.startswith(('http://127.0.0.1', 'data:', 'blob:')) else None)
        pg.goto(server['url']); pg.wait_for_load_state('networkidle')
        yield pg
        browser.close()


def _top_label(pg, elem='#probs') -> str:
    loc = pg.locator(f'{elem} [data-testid="label-output-value"]')
    return loc.inner_text().strip() if loc.count() else ''


def _wait_label(pg, want: str, timeout: float = 30_000, elem='#probs'):
    pg.wait_for_function("([sel, want]) => { const e = document.querySelector(sel);"
                         " return e && e.innerText.trim() === want; }",
                         arg=[f'{elem} [data-testid="label-output-value"]', want], timeout=timeout)


def _upload(pg, path):
    "Choose `path` in the upload tab, after clearing the file chosen before (and waiting until the page is cleared)"
    pg.get_by_role('tab', name='Upload').click()
    clear = pg.locator('#upload button[aria-label="Clear"]')
    if clear.count():
        clear.click()
        pg.wait_for_function("() => !document.querySelector('#probs [data-testid=\"label-output-value\"]')", timeout=30_000)
    pg.locator('#upload input[type=file]').set_input_files(str(path))


def _toast_text(pg) -> str:
    return ' '.join(pg.locator('.toast-body').all_inner_texts())


def test_page_loads_offline(page, server):
    assert 'Draw a digit' in page.inner_text('body')
    for tab in ('Draw', 'Upload', 'Ten digits: resnet18', '4s vs 5s: linear'):
        assert page.get_by_role('tab', name=tab).count() == 1, tab
    page.screenshot(path=SHOTS/'01_loaded.png', full_page=True)
    assert page.outside == [], f"the page asked hosts other than 127.0.0.1: {page.outside[:5]}"


def test_draw_a_one(page):
    page.get_by_role('tab', name='Draw').click()
    page.locator('#sketch').get_by_role('button', name='Brush').click()
    bb = page.locator('#sketch canvas').first.bounding_box()
    x, y0, y1 = bb['x'] + bb['width']/2, bb['y'] + bb['height']*0.2, bb['y'] + bb['height']*0.8
    page.mouse.move(x, y0); page.mouse.down()
    for i in range(1, 31): page.mouse.move(x + (i % 2), y0 + (y1 - y0)*i/30)
    page.mouse.up()
    _wait_label(page, '1', timeout=DRAW_TIMEOUT)
    page.screenshot(path=SHOTS/'02_drew_a_one.png', full_page=True)
    page.get_by_role('tab', name='4s vs 5s: linear').click()
    page.wait_for_function("() => (document.querySelector('#score')?.innerText || '').includes('score =')",
                           timeout=30_000)
    assert _top_label(page, '#probs45') in ('4', '5')
    assert page.locator('#contrib img').count() == 1 and page.locator('#weights img').count() == 1
    page.screenshot(path=SHOTS/'03_linear_tab.png', full_page=True)
    page.get_by_role('tab', name='Ten digits: resnet18').click()


def test_clear_canvas_asks_for_a_drawing(page):
    page.get_by_role('tab', name='Draw').click()
    page.locator('#sketch').get_by_role('button', name='Clear canvas').click()
    page.wait_for_function("() => /draw/i.test(document.querySelector('#note')?.innerText || '')", timeout=DRAW_TIMEOUT)
    assert _top_label(page) == ''
    page.screenshot(path=SHOTS/'04_cleared.png', full_page=True)


@pytest.mark.parametrize('digit', DIGITS)
def test_upload_mnist_png(page, digit):
    f = sorted((_mnist()/'testing'/str(digit)).iterdir())[0]
    t0 = time.perf_counter()
    _upload(page, f)
    _wait_label(page, str(digit))
    print(f"{f.name} ({digit}): label shown after {1000*(time.perf_counter() - t0):.0f} ms")
    page.screenshot(path=SHOTS/f'05_upload_{digit}.png', full_page=True)


@pytest.mark.parametrize('name, make, expect', [
    ('notes.png', lambda p: p.write_text('this is not an image'), 'not an image (PIL cannot read it): notes.png'),
    ('huge.png', lambda p: __import__('PIL.Image').Image.new('L', (8200, 8000)).save(p), 'image too large'),
])
def test_upload_bad_file(page, tmp, name, make, expect):
    p = tmp/name; make(p)
    page.get_by_role('tab', name='Upload').click()
    _upload(page, p)
    page.wait_for_function("(want) => [...document.querySelectorAll('.toast-body')].some(e => e.innerText.includes(want))",
                           arg=expect, timeout=30_000)
    text = _toast_text(page)
    assert 'Traceback' not in text and '/tmp/' not in text, text
    page.screenshot(path=SHOTS/f'06_bad_{name}.png', full_page=True)
    for b in page.locator('.toast-close').all(): b.click()


def test_concurrent_requests(server):
    "50 requests at once from 50 clients: every answer whole (its image files too), right, and the same as alone"
    from gradio_client import Client, handle_file
    from PIL import Image
    files = [sorted((_mnist()/'testing'/str(d)).iterdir())[k] for d in DIGITS for k in range(4)]    # 20 files
    asked = files + files[::4]*6                 # 50: the same few files at once, whose answers are the same files
    one = Client(server['url'], verbose=False)
    alone = {f: one.predict(handle_file(str(f)), api_name='/read_upload')[1]['label'] for f in files}
    def ask(f):
        a = Client(server['url'], verbose=False).predict(handle_file(str(f)), api_name='/read_upload')
        assert Image.open(a[2]).size == (140, 140) and os.path.getsize(a[0]) == os.path.getsize(f), a
        return a[1]['label']
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(asked)) as ex: together = list(ex.map(ask, asked))
    print(f"{len(asked)} concurrent requests answered in {time.perf_counter() - t0:.2f} s")
    assert together == [alone[f] for f in asked]
    truth = [str(d) for d in DIGITS for _ in range(4)]
    right = sum(a == t for a, t in zip(together, truth))
    assert right >= 17, f"only {right} of 20 right: {together[:20]}"
    server['log'].seek(0)
    assert 'shorter than Content-Length' not in server['log'].read()


def test_oversize_upload_refused(server, tmp):
    "A file over the 10 MB cap: one line with status 413, before any of it is stored (the server's folder unchanged)"
    import httpx
    from digit_sgd.app import MAX_UPLOAD_MB
    big = tmp/'big.png'; big.write_bytes(os.urandom(MAX_UPLOAD_MB*2**20 + 2**20))
    folder, = server['temp_dir'].glob('digit_sgd_serve_*')
    before = sorted(folder.rglob('*'))
    r = httpx.post(server['url'] + 'gradio_api/upload', files={'files': big.open('rb')}, timeout=120)
    assert r.status_code == 413 and f'up to {MAX_UPLOAD_MB} MB' in r.text and r.text.count('\n') == 1, (r.status_code, r.text)
    assert sorted(folder.rglob('*')) == before


def test_ctrl_c_stops_everything(server):
    proc = server['proc']
    os.kill(proc.pid, signal.SIGINT)
    try: rc = proc.wait(30)
    except subprocess.TimeoutExpired: pytest.fail('digit-sgd serve did not stop within 30 s of Ctrl-C')
    assert rc == 0, rc
    time.sleep(0.5)
    assert _pids_in_group(server['pgid']) == [], f"left running: {_pids_in_group(server['pgid'])}"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', server['port']))                 # the port is free again
    server['log'].seek(0)
    assert 'Traceback' not in server['log'].read()
    left = [p for p in server['temp_dir'].rglob('*') if p.is_file()]
    assert left == [] and not list(server['temp_dir'].glob('digit_sgd_serve_*')), left[:5]

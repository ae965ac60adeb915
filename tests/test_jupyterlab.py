"""The chapters run in a real JupyterLab, driven by a real browser (issue #6).

`nbdev_test` runs the notebooks through execnb; readers run them in JupyterLab. This test does what a reader
does: it starts `jupyter lab` from the project's venv, opens every chapter (`nbs/[0-9]*.ipynb`, one test per
notebook) in headless Chromium through Playwright, clicks Run > Run All Cells, waits until the kernel is idle
and no cell is queued or running, and then checks what the page shows:

- no cell has an error output (a traceback); output on stderr (warnings) is allowed;
- every non-empty code cell ran;
- figures appear: a notebook whose saved .ipynb has image outputs in k cells must show at least ceil(k/2)
  images, and every image must have loaded (naturalWidth > 0).

One full-page screenshot per notebook goes to tests/screenshots/<notebook>.png (git-ignored), and the timings
to tests/screenshots/summary.json.

The server runs on 127.0.0.1 (a free port, a random token, `--no-browser`) with its root in a temporary COPY
of the notebooks folder, so running them never touches the repository's saved outputs; it gets `IN_TEST=1`
(the notebooks shrink their work) and the caller's `FASTAI_HOME` (MNIST must be in `$FASTAI_HOME/data/mnist_png`).
Jupyter's config, data, runtime, settings and workspace folders are temporary too, so the user's own JupyterLab
set-up plays no part, and the kernel is the venv's `python3` (the test checks the kernel process's interpreter).
`MPLBACKEND` is removed from the server's environment so that figures use the inline backend, as for a reader.
The server is shut down (REST shutdown, then SIGTERM, then SIGKILL of its process group and of every process
it started, kernels included) and the browser closed in every case; the test fails if a process is left.

Run (from the repository root):

    FASTAI_HOME=/work/main/.fastai_home .venv/bin/python -m pytest tests/test_jupyterlab.py -v

or `bash .ci/browser` (installs Debian's chromium with apt-get first if it is missing).

Needs: `playwright` (Python package, in dev_requirements; `playwright install` is NOT needed) and Debian's
Chromium at /usr/bin/chromium (`apt-get install -y chromium`). When either is missing the tests fail with a
clear message, unless `DIGIT_SGD_SKIP_BROWSER=1` is set, in which case they are skipped.

Environment variables:
    DIGIT_SGD_NBS=folder           notebooks folder to test instead of nbs/ (e.g. a scratch copy)
    DIGIT_SGD_NB_TIMEOUT=600       seconds allowed per notebook (open + run all)
    DIGIT_SGD_CHROMIUM=path        browser executable (default /usr/bin/chromium)
    DIGIT_SGD_SKIP_BROWSER=1       skip (instead of fail) when playwright or chromium is missing
    DIGIT_SGD_KEEP_LAB=1           keep the temporary folder (executed copies, server.log) for debugging
"""
import json, math, os, re, secrets, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.error, urllib.parse, urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = Path(os.environ.get('DIGIT_SGD_NBS') or REPO/'nbs').resolve()
SHOTS = REPO/'tests'/'screenshots'
CHROMIUM = os.environ.get('DIGIT_SGD_CHROMIUM', '/usr/bin/chromium')
NB_TIMEOUT = float(os.environ.get('DIGIT_SGD_NB_TIMEOUT', 600))
SKIP_OK = os.environ.get('DIGIT_SGD_SKIP_BROWSER') == '1'
MARK = 'digit_sgd_lab_'  # every process we start has this in its command line (temp folder name)
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-quic']
# A traceback as JupyterLab renders an error output (errors render with the stderr renderer, like warnings do,
# so the DOM check looks at the text; the model check below looks at output_type).
TRACEBACK_RE = re.compile(r'Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+', re.M)
# JupyterLab user settings for the run: attach every cell to the DOM (the default 'full' windowing mode only
# renders the cells in view, so outputs further down would not be in the page), start the default kernel
# without asking (the saved notebooks carry no kernelspec; JupyterLab 4.6 starts python3 for them anyway, this
# makes sure no "Select Kernel" dialog can appear), and no news/update toasts (there is no internet).
LAB_SETTINGS = {
    '@jupyterlab/notebook-extension/tracker.jupyterlab-settings': {'windowingMode': 'none', 'autoStartDefaultKernel': True},
    '@jupyterlab/apputils-extension/notification.jupyterlab-settings': {'fetchNews': 'false', 'checkForUpdates': False},
}


def _notebooks():
    return sorted(p.name for p in NBS.glob('[0-9]*.ipynb'))


def _saved_image_cells(path):
    "Number of code cells of the saved notebook with an image/png output."
    nb = json.loads(Path(path).read_text())
    return sum(any('image/png' in o.get('data', {}) for o in c.get('outputs', []))
               for c in nb['cells'] if c['cell_type'] == 'code')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _jupyter_lab_exe():
    for d in (REPO/'.venv'/'bin', Path(sys.prefix)/'bin'):
        if (d/'jupyter-lab').exists(): return d/'jupyter-lab'
    pytest.fail(f'no jupyter-lab in {REPO/".venv/bin"} or {Path(sys.prefix)/"bin"}: pip install -e ".[dev]"')


class Lab:
    def __init__(self, root, port, token, proc, log):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log
        self.url = f'http://127.0.0.1:{port}'

    def api(self, path, method='GET', timeout=10):
        req = urllib.request.Request(f'{self.url}{path}', method=method,
                                     headers={'Authorization': f'token {self.token}'})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n=40):
        try: return '\n'.join(self.log.read_text(errors='replace').splitlines()[-n:])
        except OSError: return ''

    def session(self, nb):
        return next((s for s in self.api('/api/sessions') if s.get('path') == nb), None)


def _descendants(pid):
    import psutil
    try: return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess: return []


def _stop_server(lab):
    "Shut the server down and make sure neither it nor anything it started (kernels) is left."
    import psutil
    procs = [p for p in _descendants(lab.proc.pid)]
    if lab.proc.poll() is None:
        try: lab.api('/api/shutdown', method='POST')  # shuts the kernels down too
        except Exception: pass
        try: lab.proc.wait(20)
        except subprocess.TimeoutExpired: pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if lab.proc.poll() is None:
            try: os.killpg(lab.proc.pid, sig)
            except ProcessLookupError: pass
            try: lab.proc.wait(wait)
            except subprocess.TimeoutExpired: pass
    # kernels run in sessions of their own (not in the server's process group): end any that is left
    procs += [p for p in psutil.process_iter() if p.pid != os.getpid() and _has_mark(p, lab.root)]
    alive = [p for p in procs if _alive(p)]
    for p in alive:
        try: p.kill()
        except psutil.NoSuchProcess: pass
    psutil.wait_procs(alive, timeout=10)
    return alive


def _alive(p):
    import psutil
    try: return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error: return False


def _has_mark(p, root):
    try: return str(root) in ' '.join(p.cmdline())
    except Exception: return False


def _report(config, results):
    "Timings and counts per notebook: to tests/screenshots/summary.json and to the terminal."
    if not results: return
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS/'summary.json').write_text(json.dumps(results, indent=1))
    tr, cm = config.pluginmanager.get_plugin('terminalreporter'), config.pluginmanager.get_plugin('capturemanager')
    if not (tr and cm): return
    with cm.global_and_fixture_disabled():
        tr.write_line('')
        for nb, r in results.items():
            tr.write_line(f"jupyterlab: {nb}: {r['seconds']:.0f} s (run all {r['run_seconds']:.0f} s), "
                          f"{r['images']} images, {r['progress_bars']} progress bars, "
                          f"{r['stderr_outputs']} stderr outputs, {len(r['errors'])} errors")
        tr.write_line(f"jupyterlab: total {sum(r['seconds'] for r in results.values()):.0f} s "
                      f"for {len(results)} notebooks; screenshots in {SHOTS}")


@pytest.fixture(scope='session')
def tools():
    "playwright and chromium, or a clear failure (a skip with DIGIT_SGD_SKIP_BROWSER=1)."
    missing = []
    try: import playwright.sync_api  # noqa: F401
    except ImportError: missing.append(f'the playwright Python package (`{sys.executable} -m pip install playwright`)')
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f'a Chromium at {CHROMIUM} (`apt-get update && apt-get install -y chromium`)')
    if missing:
        msg = 'browser test needs ' + ' and '.join(missing)
        if SKIP_OK: pytest.skip(msg + ' (skipped: DIGIT_SGD_SKIP_BROWSER=1)')
        pytest.fail(msg + ' (set DIGIT_SGD_SKIP_BROWSER=1 to skip instead)', pytrace=False)


@pytest.fixture(scope='session')
def lab(tools, request):
    "A `jupyter lab` server over a temporary copy of the notebooks folder."
    root = Path(tempfile.mkdtemp(prefix=MARK))
    nbdir = root/'nbs'
    shutil.copytree(NBS, nbdir, ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc', '__pycache__'))
    for name, val in LAB_SETTINGS.items():
        (root/'settings'/name).parent.mkdir(parents=True, exist_ok=True)
        (root/'settings'/name).write_text(json.dumps(val))
    env = dict(os.environ, IN_TEST='1', JUPYTER_CONFIG_DIR=str(root/'config'), JUPYTER_DATA_DIR=str(root/'data'),
               JUPYTER_RUNTIME_DIR=str(root/'runtime'), JUPYTERLAB_SETTINGS_DIR=str(root/'settings'),
               JUPYTERLAB_WORKSPACES_DIR=str(root/'workspaces'), PYTHONUNBUFFERED='1')
    for k in ('JUPYTER_PATH', 'JUPYTER_TOKEN', 'JUPYTER_PREFER_ENV_PATH', 'MPLBACKEND'): env.pop(k, None)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [str(_jupyter_lab_exe()), '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--ServerApp.port_retries=0',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={nbdir}', '--LabApp.expose_app_in_browser=True',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--ServerApp.terminals_enabled=False', '--LabApp.extension_manager=readonly']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')  # CI containers run as root
    log = root/'server.log'
    with open(log, 'wb') as f:
        proc = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    lab = Lab(root, port, token, proc, log)
    lab.results = {}
    try:
        t_end = time.monotonic() + 120
        while True:
            if proc.poll() is not None: pytest.fail(f'jupyter lab exited with {proc.returncode}:\n{lab.log_tail()}')
            try:
                lab.api('/api/status', timeout=5); break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > t_end: pytest.fail(f'jupyter lab did not answer in 120 s:\n{lab.log_tail()}')
                time.sleep(0.5)
        specs = lab.api('/api/kernelspecs')
        assert 'python3' in specs['kernelspecs'], f'no python3 kernel: {specs}'
        yield lab
    finally:
        left = _stop_server(lab)
        _report(request.config, lab.results)
        if os.environ.get('DIGIT_SGD_KEEP_LAB') != '1': shutil.rmtree(root, ignore_errors=True)
        assert not left, f'processes were left behind and had to be killed: {left}'


@pytest.fixture(scope='session')
def browser(tools, lab):
    "Headless Debian Chromium with a fresh profile, through Playwright."
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    ctx = None
    try:
        ctx = pw.chromium.launch_persistent_context(str(lab.root/'chromium-profile'), executable_path=CHROMIUM,
                                                    args=CHROME_ARGS, headless=True,
                                                    viewport={'width': 1400, 'height': 1000})
        yield ctx
    finally:
        try:
            if ctx: ctx.close()
        finally: pw.stop()


# In-page probes. `window.jupyterapp` is there because of --LabApp.expose_app_in_browser.
JS_STATE = """(nb) => {
  const app = window.jupyterapp;
  if (!app) return null;
  const w = app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== nb || !w.content || !w.content.model) return null;
  const cells = [];
  for (let i = 0; i < w.content.model.cells.length; i++) {
    const c = w.content.model.cells.get(i);
    if (c.type !== 'code') continue;
    cells.push({i, src: c.sharedModel.getSource().trim().length, count: c.executionCount,
                outputs: c.outputs.toJSON().map(o => o.output_type === 'error' ? {t: 'error', ename: o.ename, evalue: o.evalue} : {t: o.output_type})});
  }
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')].map(e => e.textContent.trim());
  return {status: w.sessionContext.kernelDisplayStatus, kernel: !!(w.sessionContext.session && w.sessionContext.session.kernel),
          cells, busy: prompts.filter(p => p.includes('*')).length};
}"""

JS_OUTPUTS = """() => {
  const root = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const outs = [...root.querySelectorAll('.jp-OutputArea-output')];
  const imgs = [...root.querySelectorAll('.jp-OutputArea-output img')];
  const stderr = outs.filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr');
  const tb = new RegExp(%s, 'm');
  return {images: imgs.length, broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
          progress: [...root.querySelectorAll('.jp-OutputArea-output progress')].map(p => [p.value, p.max]),
          stderr: stderr.length,
          tracebacks: stderr.map(o => o.textContent).filter(t => tb.test(t)).map(t => t.slice(-400)),
          // the notebook scrolls inside .jp-WindowedPanel-outer; chrome = what is around it (menus, toolbar, status bar)
          height: root.querySelector('.jp-WindowedPanel-inner').scrollHeight,
          chrome: window.innerHeight - root.querySelector('.jp-WindowedPanel-outer').clientHeight};
}""" % json.dumps(TRACEBACK_RE.pattern)


class KernelDied(Exception): pass


def _wait(cond, timeout, what, page=None, every=1.0):
    t_end = time.monotonic() + timeout
    while True:
        v = cond()
        if v: return v
        if time.monotonic() > t_end: raise TimeoutError(f'timed out after {timeout:.0f} s waiting for {what}')
        if page is not None: page.wait_for_timeout(every*1000)
        else: time.sleep(every)


def _kernel_python(lab):
    "Command lines of the kernels the server started."
    return [' '.join(p.cmdline()) for p in _descendants(lab.proc.pid) if 'ipykernel' in ' '.join(p.cmdline())]


_NBS = _notebooks()


@pytest.mark.parametrize('nb', _NBS or [pytest.param(None, id='no-notebooks')])
def test_notebook_in_jupyterlab(lab, browser, nb):
    if nb is None: pytest.fail(f'no notebooks nbs/[0-9]*.ipynb in {NBS}', pytrace=False)
    expected_imgs = _saved_image_cells(NBS/nb)
    t0 = time.monotonic()
    page = browser.new_page()
    state = {}
    try:
        page.goto(f'{lab.url}/lab/tree/{urllib.parse.quote(nb)}?reset&token={lab.token}', timeout=120_000)
        page.wait_for_selector('.jp-NotebookPanel .jp-Notebook .jp-Cell', timeout=120_000)

        def kernel_ready():
            # the saved notebooks have no kernelspec: should JupyterLab ask for a kernel, pick its default
            dlg = page.locator('.jp-Dialog .jp-mod-accept')
            if dlg.count() and dlg.first.is_visible(): dlg.first.click()
            st = page.evaluate(JS_STATE, nb)
            return st if st and st['kernel'] and st['status'] == 'idle' else None
        try: _wait(kernel_ready, 120, f'the kernel of {nb} to start', page)
        except TimeoutError as e:
            page.screenshot(path=str(_shot(nb)), full_page=True)
            pytest.fail(f'{e}; screenshot {_shot(nb)}; server log:\n{lab.log_tail()}', pytrace=False)
        page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook').click(position={'x': 5, 'y': 5})
        # Run > Run All Cells, as a reader would
        page.locator('#jp-MainMenu').get_by_role('menuitem', name='Run', exact=True).click()
        page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        t_run = time.monotonic()

        seen = {'started': False, 'idle': 0}
        def finished():
            st = page.evaluate(JS_STATE, nb)
            if not st: return None
            state.update(st)
            if st['status'] in ('dead', 'autorestarting', 'restarting'):
                raise KernelDied(f"the kernel of {nb} died (status {st['status']!r})")
            ran = [c for c in st['cells'] if c['count'] is not None]
            if st['busy'] or st['status'] != 'idle' or ran: seen['started'] = True
            idle = seen['started'] and not st['busy'] and st['status'] == 'idle'
            seen['idle'] = seen['idle'] + 1 if idle else 0
            return seen['idle'] >= 2  # idle at two polls in a row
        remaining = NB_TIMEOUT - (time.monotonic() - t0)
        try: _wait(finished, remaining, f'Run All Cells of {nb} to finish', page)
        except (TimeoutError, KernelDied) as e:
            page.screenshot(path=str(_shot(nb)), full_page=True)
            pytest.fail(f"{e}; {state.get('busy')} cells still queued/running, kernel {state.get('status')!r}; "
                        f"screenshot {_shot(nb)}", pytrace=False)
        run_s = time.monotonic() - t_run
        page.wait_for_timeout(1000)  # let the last images load
        out = page.evaluate(JS_OUTPUTS)
        kernels = _kernel_python(lab)
        _screenshot(page, nb, out['height'] + out['chrome'])
    finally:
        try:
            s = lab.session(nb)
            if s: lab.api(f"/api/sessions/{s['id']}", method='DELETE')  # free the kernel before the next notebook
        except Exception: pass
        page.close()

    errors = [f"cell {c['i']}: {o['ename']}: {o['evalue']}" for c in state['cells'] for o in c['outputs'] if o['t'] == 'error']
    not_run = [c['i'] for c in state['cells'] if c['src'] and c['count'] is None]
    lab.results[nb] = dict(seconds=round(time.monotonic() - t0, 1), run_seconds=round(run_s, 1),
                           code_cells=len(state['cells']), images=out['images'], broken_images=out['broken_images'],
                           expected_image_cells=expected_imgs, progress_bars=len(out['progress']),
                           progress=out['progress'], stderr_outputs=out['stderr'], errors=errors,
                           dom_tracebacks=len(out['tracebacks']), not_run=not_run, kernels=kernels)
    problems = []
    if not (kernels and all(str(REPO/'.venv'/'bin'/'python') in k or sys.executable in k for k in kernels)):
        problems.append(f'the kernel is not the venv python: {kernels}')
    if errors or out['tracebacks']:
        problems.append(f'error outputs: {errors}\n' + '\n---\n'.join(out['tracebacks']))
    if not_run: problems.append(f'code cells that did not run (0-based cell indices): {not_run}')
    if out['broken_images']: problems.append(f"{out['broken_images']} of {out['images']} images did not load")
    if expected_imgs and out['images'] < max(1, math.ceil(expected_imgs / 2)):
        problems.append(f"{out['images']} images shown; the saved notebook has {expected_imgs} cells with images")
    if problems:
        pytest.fail(f'{nb} in JupyterLab (screenshot {_shot(nb)}):\n' + '\n'.join(problems), pytrace=False)


def _shot(nb):
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS/(Path(nb).stem + '.png')


def _screenshot(page, nb, height):
    "The whole notebook: JupyterLab scrolls inside the page, so make the viewport as tall as the notebook."
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.set_viewport_size({'width': 1400, 'height': int(min(max(height + 40, 1000), 30000))})
    page.wait_for_timeout(1500)
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => e.scrollTop = 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(_shot(nb)), full_page=True)
    page.set_viewport_size({'width': 1400, 'height': 1000})

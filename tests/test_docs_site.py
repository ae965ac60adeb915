"""The rendered docs site, read in a real browser with no network (issue #12).

`nbdev_docs` (Quarto) writes the site to `_docs/`. This test serves that folder on 127.0.0.1 and opens it in
headless Debian Chromium through Playwright, with every request that leaves 127.0.0.1 refused, except that
addresses under the site's own URL (`site-url` in nbs/nbdev.yml, which the README links to) are answered from
`_docs/`, as the published site would answer them. Then:

- every page in the sidebar opens (HTTP 200), and every link on every page to the site itself resolves: the
  page exists and, for a link with `#anchor`, the anchor is on it;
- every image has loaded; math is typeset as MathML, with no raw `\\(`, `\\[` or `$$` left in the text;
- no page shows an error output (a traceback) or a warning on stderr;
- printed results fit the text column (issue #25): at least 88 characters of output fit at 1280 px, and no
  printed line is wider than the column, except table rows and one-line error messages;
- nothing is fetched from outside the site (the site works offline);
- every exported function and class of `digit_sgd` (from `digit_sgd/_modidx.py`) has its `show_doc` entry at the
  address nbdev gives it (methods: every link to one must resolve, as for any link);
- the search box finds the right pages for "SGD" and "FastLoader";
- every link in README.md to the site resolves too.

One full-page screenshot per page goes to tests/screenshots/site/ (git-ignored).

Run after `nbdev_docs`:  .venv/bin/python -m pytest tests/test_docs_site.py -v
Needs playwright and /usr/bin/chromium, as tests/test_jupyterlab.py does (DIGIT_SGD_SKIP_BROWSER=1 skips).
"""
import functools, http.server, os, re, threading, urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO/'_docs'
SHOTS = REPO/'tests'/'screenshots'/'site'
CHROMIUM = os.environ.get('DIGIT_SGD_CHROMIUM', '/usr/bin/chromium')
SKIP_OK = os.environ.get('DIGIT_SGD_SKIP_BROWSER') == '1'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-quic']
TRACEBACK_RE = re.compile(r'Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+', re.M)
WARNING_RE = re.compile(r'\b\w*Warning\b:|warnings\.warn\(')
TABLE_RE = re.compile(r'\S {2,}\S.* {2,}\S|^\s*[-=|+]{3,}')          # aligned columns, or a table's rule
# lines that are not results to read at a glance: one-line error messages (being one line is their lesson), JSON that
# a command prints for programs, and code or shell commands that an output shows (a file's text, a hint to type)
ERROR_LINE_RE = re.compile(r'^\s*(?:digit-sgd\b|usage: )|\b\w*Error\b|\berror: |\bfailed: |^\s*[{\[]|^\s*#|'
                           r'^\s*(?:\$ |rm |tar |mkdir |python |pip |torchrun |cd )|\bnot an image\b')


def _site_url() -> str:
    m = re.search(r'site-url:\s*"?([^"\s]+)"?', (REPO/'nbs'/'nbdev.yml').read_text())
    return m.group(1).rstrip('/') + '/'


SITE_URL = _site_url()


@pytest.fixture(scope='session')
def server():
    "`_docs/` over HTTP on 127.0.0.1 (a free port), for the whole session"
    if not (DOCS/'index.html').is_file(): pytest.fail('no _docs/index.html: run nbdev_docs first', pytrace=False)
    handler = functools.partial(_QuietHandler, directory=str(DOCS))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown(); httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope='session')
def ctx(server):
    "Headless Chromium; requests outside 127.0.0.1 are refused (and recorded), the site's own URL is served locally"
    try: from playwright.sync_api import sync_playwright
    except ImportError: _missing('the playwright Python package')
    if not os.access(CHROMIUM, os.X_OK): _missing(f'a Chromium at {CHROMIUM} (apt-get install -y chromium)')
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
    context = browser.new_context(viewport={'width': 1280, 'height': 900})
    context.outside = []

    def route(r):
        url = r.request.url
        if url.startswith(server): return r.continue_()
        if url.startswith(SITE_URL): return r.continue_(url=server + url[len(SITE_URL):])
        if url.startswith(('data:', 'blob:', 'about:')): return r.continue_()
        context.outside.append(url)
        return r.abort()
    context.route('**/*', route)
    yield context
    context.close(); browser.close(); pw.stop()


def _missing(what):
    if SKIP_OK: pytest.skip(f'the site test needs {what} (skipped: DIGIT_SGD_SKIP_BROWSER=1)')
    pytest.fail(f'the site test needs {what} (set DIGIT_SGD_SKIP_BROWSER=1 to skip)', pytrace=False)


def _pages() -> list:
    "The pages the sidebar lists, in its order"
    html = (DOCS/'index.html').read_text()
    return list(dict.fromkeys(re.findall(r'<a href="\./([^"#]+\.html)" class="sidebar-item-text sidebar-link', html)))


PAGES = _pages() if (DOCS/'index.html').is_file() else []

# What the page shows, read in the browser
JS_PAGE = r"""() => {
  const main = document.querySelector('main') || document.body;
  const imgs = [...document.querySelectorAll('main img')];
  return {
    title: document.title,
    text: main.innerText,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    math: document.querySelectorAll('main math').length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    errors: [...document.querySelectorAll('.cell-output-error')].map(e => e.innerText.slice(0, 300)),
    stderr: [...document.querySelectorAll('.cell-output-stderr')].map(e => e.innerText.slice(0, 300)),
    wide: [...document.querySelectorAll('main pre, main .cell-output-display, main table')]
            .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible').length,
    // printed results: each stdout line that a reader would have to scroll sideways to read
    cut_lines: [...document.querySelectorAll('main .cell-output-stdout pre')].flatMap(pre => {
      const probe = document.createElement('span'); probe.textContent = 'x'.repeat(100);
      pre.appendChild(probe); const ch = probe.getBoundingClientRect().width/100; probe.remove();
      const cs = getComputedStyle(pre);
      const room = Math.floor((pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight))/ch);
      return pre.innerText.split('\n').filter(l => l.length > room).map(l => [room, l]);
    }),
    // how many characters of printed output fit the text column (measured on the first output, if any)
    fit_chars: (() => {
      const pre = document.querySelector('main .cell-output-stdout pre'); if (!pre) return null;
      const probe = document.createElement('span'); probe.textContent = 'x'.repeat(100);
      pre.appendChild(probe); const ch = probe.getBoundingClientRect().width/100; probe.remove();
      const cs = getComputedStyle(pre);
      return Math.floor((pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight))/ch);
    })(),
  };
}"""


_CACHE = {}     # page name -> what the browser saw (each page is opened once)


def _visit(ctx, server, page_name):
    if page_name not in _CACHE:
        page = ctx.new_page()
        resp = page.goto(server + page_name, wait_until='load')
        assert resp is not None and resp.status == 200, f'{page_name}: HTTP {resp and resp.status}'
        page.wait_for_timeout(300)
        info = page.evaluate(JS_PAGE)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS/(page_name[:-5] + '.png')), full_page=True)
        page.close()
        _CACHE[page_name] = info
    return _CACHE[page_name]


def test_sidebar_lists_every_chapter():
    names = [p.stem for p in sorted((REPO/'nbs').glob('[0-9]*.ipynb'))]
    assert PAGES[0] == 'index.html' and len(PAGES) == len(names) + 1, PAGES
    for n in names:   # nbdev names a page after the notebook without its number: 00_data -> data.html, 06b_app -> app.html
        assert re.sub(r'^\d+[a-zA-Z0-9]*_', '', n) + '.html' in PAGES, (n, PAGES)


@pytest.mark.parametrize('page_name', PAGES)
def test_page(ctx, server, page_name):
    info = _visit(ctx, server, page_name)
    assert not info['broken'], f"{page_name}: images that did not load: {info['broken']}"
    raw = [m for m in re.findall(r'\\\(|\\\[|\$\$', info['text'])]
    assert not raw, f"{page_name}: raw TeX left in the page: {raw[:5]}"
    if _has_math(_nb_of(page_name)): assert info['math'] > 0, f"{page_name}: the notebook has math, the page none"

    assert not info['errors'], f"{page_name}: error outputs: {info['errors']}"
    assert not [t for t in info['stderr'] if TRACEBACK_RE.search(t)], f"{page_name}: tracebacks: {info['stderr']}"
    assert not [t for t in info['stderr'] if WARNING_RE.search(t)], f"{page_name}: warnings shown: {info['stderr']}"
    assert info['wide'] == 0, f"{page_name}: {info['wide']} outputs are cut off at the right edge"
    # results fit the page (issue #25): printed lines are read without scrolling; tables (columns lined up by runs
    # of spaces) and long one-line error messages, which are the lesson where they appear, may scroll
    if info['fit_chars'] is not None: assert info['fit_chars'] >= 88, f"{page_name}: only {info['fit_chars']} characters fit"
    cut = [l for room, l in info['cut_lines'] if not TABLE_RE.search(l) and not ERROR_LINE_RE.search(l)]
    assert not cut, f"{page_name}: printed lines wider than the text column: {cut[:5]}"
    assert not ctx.outside, f"fetched from outside the site: {sorted(set(ctx.outside))[:10]}"


def _has_math(nb_name: str) -> bool:
    "Does a markdown cell of the notebook hold TeX math (`$$`, `\\(`, or `$...$` with a TeX command in it)?"
    import json
    cells = json.loads((REPO/'nbs'/nb_name).read_text())['cells']
    md = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
    return bool(re.search(r'\$\$|\\\(|\$[^$\n]*\\[a-zA-Z]+[^$\n]*\$', md))


def _nb_of(page_name: str) -> str:
    if page_name == 'index.html': return 'index.ipynb'
    return next(p.name for p in (REPO/'nbs').glob('*.ipynb') if re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.stem) + '.html' == page_name)


def _check_link(ctx, server, url: str, where: str):
    "`url` (on the local server or under SITE_URL) must name an existing page, and its anchor must be on it"
    if url.startswith(SITE_URL): url = server + url[len(SITE_URL):]
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.path.lstrip('/')) or 'index.html'
    if path.endswith('/'): path += 'index.html'
    f = DOCS/path
    assert f.is_file(), f"{where}: link to a missing page: {url}"
    if parts.fragment and path.endswith('.html') and path in PAGES:
        ids = _visit(ctx, server, path)['ids']
        assert parts.fragment in ids, f"{where}: link to a missing anchor: {url}"


@pytest.mark.parametrize('page_name', PAGES)
def test_internal_links(ctx, server, page_name):
    info = _visit(ctx, server, page_name)
    own = [u for u in info['links'] if u.startswith(server) or u.startswith(SITE_URL)]
    assert own, f"{page_name}: no links to the site at all?"
    for u in sorted(set(own)): _check_link(ctx, server, u, page_name)


def test_readme_links(ctx, server):
    readme = (REPO/'README.md').read_text()
    links = sorted(set(re.findall(r'\]\((' + re.escape(SITE_URL) + r'[^)\s]*)\)', readme)))
    chapters = [u for u in links if '#' not in u]
    assert len(chapters) >= 8, f"README links to only {len(chapters)} pages of the site: {chapters}"
    for u in links: _check_link(ctx, server, u, 'README.md')


def test_show_doc_for_every_export(ctx, server):
    from digit_sgd._modidx import d
    syms = {name: v[0] for mod in d['syms'].values() for name, v in mod.items()}
    missing = []
    for name, url in sorted(syms.items()):
        parts = name.split('.')[2:]
        if len(parts) > 1 or parts[0].startswith('_'): continue   # functions and classes; private helpers have none
        page, _, anchor = (url[len(SITE_URL):] if url.startswith(SITE_URL) else url).partition('#')
        assert page in PAGES, f"{name}: nbdev puts its docs on {page}, which is not a page of the site"
        if anchor not in _visit(ctx, server, page)['ids']: missing.append(f'{name} ({page}#{anchor})')
    assert len(syms) > 50, len(syms)
    assert not missing, f"exports without a show_doc entry: {missing}"


@pytest.mark.parametrize('word,page', [('SGD', 'sgd.html'), ('FastLoader', 'profiling.html')])
def test_search(ctx, server, word, page):
    p = ctx.new_page()
    p.goto(server + 'index.html', wait_until='load')
    p.click('#quarto-search button, .aa-DetachedSearchButton, #quarto-search')
    box = p.locator('input.aa-Input')
    box.wait_for(timeout=10_000)
    box.fill(word)
    p.wait_for_selector('.aa-Item a, a.aa-ItemLink, .aa-List', timeout=10_000)
    p.wait_for_timeout(500)
    hrefs = p.evaluate("() => [...document.querySelectorAll('.aa-Item a, a.aa-ItemLink')].map(a => a.href)")
    p.screenshot(path=str(SHOTS/f'search-{word}.png'))
    p.close()
    assert any(urllib.parse.urlsplit(h).path.endswith('/' + page) for h in hrefs), f"search {word!r}: {hrefs[:10]}"

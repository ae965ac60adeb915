"""Quarto post-render step (see `nbs/_quarto.yml`): the site must work offline, so no page may load anything from the web.

Quarto adds require.js and jQuery from a CDN to every page that has an HTML output, in case the output is a
JavaScript widget. Ours are tables and progress bars with no script in them, so those two scripts are dropped.
Anything else a page would fetch from outside the site stops the build, with the page and the address."""
import os, re, sys
from pathlib import Path

WIDGET_JS = re.compile(r'<script src="https://cdn\.jsdelivr\.net/npm/(?:requirejs|jquery)@[^"]*"[^>]*></script>\s*'
                       r"|<script type=\"application/javascript\">define\('jquery', \[\],function\(\) "
                       r"\{return window\.jQuery;\}\)</script>\s*")
EXTERNAL = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(https?:)?//[^"]*"', re.I)

out = Path(os.environ.get('QUARTO_PROJECT_OUTPUT_DIR', '_docs'))
bad = []
for page in sorted(out.rglob('*.html')):
    html = page.read_text(encoding='utf-8')
    if '<script' in ''.join(re.findall(r'<div class="cell-output[^"]*">.*?</div>', html, re.S)):
        bad.append(f"{page.name}: an output holds a script; it may need require.js, so it is kept")
    else:
        stripped = WIDGET_JS.sub('', html)
        if stripped != html: page.write_text(stripped, encoding='utf-8')
        html = stripped
    bad += [f"{page.name}: loads {m.group(0)[:160]}" for m in EXTERNAL.finditer(html)]
for css in sorted(out.rglob('*.css')):
    bad += [f"{css.relative_to(out)}: imports {m.group(0)[:160]}"
            for m in re.finditer(r'@import\s+url\(\s*["\']?https?://[^)]*\)', css.read_text(encoding='utf-8', errors='replace'))]
if bad:
    print("the site would load things from the web:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)

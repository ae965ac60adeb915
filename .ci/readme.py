"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines lack).

`python .ci/readme.py` rewrites README.md; `python .ci/readme.py --check` exits 1 if README.md is out of date.
Markdown cells are copied; code cells marked `#| hide` are dropped; others are shown with their saved text output.
Links to chapter notebooks point at the docs site."""
import json, re, sys, configparser
from pathlib import Path

root = Path(__file__).resolve().parent.parent
cfg = configparser.ConfigParser(); cfg.read(root/'settings.ini')
site = cfg['DEFAULT']['doc_host'].rstrip('/') + cfg['DEFAULT']['doc_baseurl'].rstrip('/')

def render() -> str:
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code' and not re.search(r'^#\|\s*hide', src, re.M):
            out.append(f"```python\n{src}\n```")
            for o in c.get('outputs', []):
                txt = ''.join(o.get('text', '') or o.get('data', {}).get('text/plain', ''))
                if txt: out.append(f"```\n{txt.rstrip()}\n```")
    md = '\n\n'.join(out) + '\n'
    md = re.sub(r'\]\((?!https?:)([\w.-]+)\.ipynb\)', rf']({site}/\1.html)', md)
    return '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n' + md

if __name__ == '__main__':
    new, f = render(), root/'README.md'
    if '--check' in sys.argv:
        if f.read_text() != new: sys.exit('README.md is out of date with nbs/index.ipynb: run python .ci/readme.py')
        print('README.md is in step with nbs/index.ipynb')
    else: f.write_text(new); print('wrote README.md')

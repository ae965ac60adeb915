"""Where readers already are (issue #24): every notebook's first cell installs digit_sgd where it is missing, every
chapter links to itself on Colab and Kaggle, and nbdev's two GitHub workflows test what setup.py claims. All built from
settings.ini, so a new repository URL or branch fails here until the notebooks follow. The install itself is proved by
.ci/release, which runs chapters 3 and 5 outside the repository in a venv without digit_sgd."""
import configparser, json, re
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
CFG = configparser.ConfigParser(); CFG.read(ROOT/'settings.ini')
GIT, BRANCH = CFG['DEFAULT']['git_url'], CFG['DEFAULT']['branch']
SLUG = GIT.split('github.com/')[1]
NBS = sorted((ROOT/'nbs').glob('*.ipynb'))

def cells(nb: Path) -> list: return json.loads(nb.read_text())['cells']
def src(c: dict) -> str: return ''.join(c['source'])

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_first_cell_installs_from_the_repository(nb):
    c = cells(nb)[0]
    s = src(c)
    assert c['cell_type'] == 'code' and s.startswith('#| hide\n#| eval: false\n'), s[:80]   # off the page, nbdev skips it
    assert "if importlib.util.find_spec('digit_sgd') is None:" in s                            # only where it is missing
    assert f"'digit_sgd[app,dist] @ git+{GIT}@{BRANCH}'" in s, s                                 # settings.ini's repository
    assert "DIGIT_SGD_PIP" in s and "importlib.invalidate_caches()" in s
    assert not c.get('outputs')

@pytest.mark.parametrize('nb', [p for p in NBS if p.name != 'index.ipynb'], ids=lambda p: p.name)
def test_chapter_links_to_colab_and_kaggle(nb):
    cs = cells(nb)
    title = next(i for i, c in enumerate(cs) if c['cell_type'] == 'markdown')
    assert src(cs[title]).startswith('# '), 'the title cell comes first'
    links = src(cs[title + 1])
    gh = f"github.com/{SLUG}/blob/{BRANCH}/nbs/{nb.name}"
    assert f"[Open in Colab](https://colab.research.google.com/github/{SLUG}/blob/{BRANCH}/nbs/{nb.name})" in links, links
    assert f"[Open in Kaggle](https://kaggle.com/kernels/welcome?src=https://{gh})" in links, links

def test_links_fail_for_another_notebook():           # the check above can fail: a link copied from another chapter
    other = src(cells(ROOT/'nbs'/'03_sgd.ipynb')[3])
    assert '03_sgd.ipynb' in other and '05_vision_learner.ipynb' not in other

def workflow(name: str) -> dict: return yaml.safe_load((ROOT/'.github'/'workflows'/name).read_text())

def test_test_workflow_runs_nbdev_ci_on_every_claimed_python():
    w = workflow('test.yaml')
    job = w['jobs']['test']
    step = job['steps'][0]
    assert step['uses'] == 'fastai/workflows/nbdev-ci@master' and step['with']['torch_cpu'] is True
    assert step['with']['version'] == '${{ matrix.py }}'
    setup = (ROOT/'setup.py').read_text()
    claimed = re.search(r"py_versions = '([\d. ]+)'\.split\(\)", setup).group(1).split()
    claimed = claimed[claimed.index(CFG['DEFAULT']['min_python']):]
    assert job['strategy']['matrix']['py'] == claimed           # the classifiers are what the workflow tests

def test_deploy_workflow_publishes_the_site():
    w = workflow('deploy.yaml')
    assert w['permissions'] == {'contents': 'write', 'pages': 'write'}
    assert w['jobs']['deploy']['steps'][0]['uses'] == 'fastai/workflows/quarto-ghp@master'
    assert BRANCH in w[True]['push']['branches']                 # YAML reads the key `on` as True

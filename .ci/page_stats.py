#!/usr/bin/env python3
"""Issue #25's page figures: visible code lines, visible `test_fail` calls, and checks in all.

Visible: a code cell with no `#| hide` directive (what the docs site shows). A line: a non-blank source line,
directives (`#| ...`) not counted. Checks: calls of `test_*` from fastcore.test and `assert` statements in every
notebook cell, plus the test functions, `assert`s and `test_*` calls in tests/*.py.
Usage: python .ci/page_stats.py [--json]
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
CHECK = re.compile(r'\b(?:test_(?:eq|ne|close|fail|is|eq_type|warns|stdout|shuffled|fig_exists|sig)|assert)\b')
FAIL = re.compile(r'\btest_fail\b')
EARLY = ('00_', '01_', '01b_', '02_', '03_', '04_', '05_', '06_', '06b_')

def cells(nb):
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] == 'code': yield ''.join(c['source'])

def hidden(src): return any(re.match(r'#\|\s*hide\s*$', l.strip()) for l in src.splitlines())
def lines(src): return [l for l in src.splitlines() if l.strip() and not l.strip().startswith('#|')]
def checks(text): return len(CHECK.findall(re.sub(r'#(?!\|).*', '', text)))

def stats():
    "(rows, totals) for every notebook and tests/*.py"
    rows, tot = [], dict(visible_lines=0, early_visible_lines=0, visible_test_fail=0, visible_checks=0, checks=0)
    for nb in sorted((root/'nbs').glob('*.ipynb')):
        vis = fail = vchk = chk = 0
        for src in cells(nb):
            n = checks(src); chk += n
            if hidden(src): continue
            ls = lines(src); vis += len(ls); vchk += n
            fail += sum(len(FAIL.findall(l)) for l in ls if not l.strip().startswith('#'))
        rows.append((nb.name, vis, fail, vchk, chk))
        tot['visible_lines'] += vis; tot['visible_test_fail'] += fail; tot['visible_checks'] += vchk; tot['checks'] += chk
        if nb.name.startswith(EARLY): tot['early_visible_lines'] += vis
    py = 0
    for f in sorted((root/'tests').glob('test_*.py')):
        t = f.read_text(); n = checks(t) + len(re.findall(r'^\s*def test_', t, re.M)); py += n
        rows.append((f'tests/{f.name}', 0, 0, 0, n))
    tot['checks'] += py; tot['tests_py_checks'] = py
    return rows, tot

if __name__ == '__main__':
    rows, tot = stats()
    if '--json' in sys.argv: print(json.dumps(tot)); sys.exit()
    print(f"{'file':32} {'visible lines':>13} {'visible test_fail':>17} {'visible checks':>14} {'checks':>7}")
    for r in rows: print(f'{r[0]:32} {r[1]:13,} {r[2]:17,} {r[3]:14,} {r[4]:7,}')
    print(f"{'all':32} {tot['visible_lines']:13,} {tot['visible_test_fail']:17,} {tot['visible_checks']:14,} {tot['checks']:7,}")
    print(f"chapters 0-6 with 1b and 6b: {tot['early_visible_lines']:,} visible lines")
    print(f"targets: visible lines <= 2,300 (0-6: <= 1,100), visible test_fail <= 20, checks >= the count before")

"""Every number in a chapter's prose must appear in that chapter's saved outputs or code (issue #25).

A prose number matches when some number in the notebook's code or saved outputs rounds to it at the precision the
prose states: "98.5%" matches 0.9853 or 98.47, "5.0x" matches 5.04, "11.7 million" matches 11,708,992, "190" matches
189.6 but not 93. Numbers quoted from elsewhere (the seed post, papers, MNIST's sizes) are listed, with their source,
in `prose_numbers_allow.txt` beside this file. Small whole numbers (0 to 12: "two epochs", "chapter 7", "3 seeds")
version strings and the numbers inside formulas ($...$) are not checked.

Run it on its own: `python tests/prose_numbers.py [nbs/03_sgd.ipynb ...]` lists what does not match.
"""
from __future__ import annotations
import bisect, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW = Path(__file__).with_name('prose_numbers_allow.txt')

# a number: 11,708,992 | 0.985 | 1e-37 | .5 ; then an optional unit that changes its value
NUM = re.compile(r'(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+|\.\d+)(?:[eE]([-+−]?\d+))?(?![\w.]*\d)')
SCALE = re.compile(r'\s*(%|\s?(?:million|thousand|billion)\b|\s?[kKM]\b)?')
FACTORS = {'%': 0.01, 'million': 1e6, 'thousand': 1e3, 'billion': 1e9, 'k': 1e3, 'K': 1e3, 'M': 1e6}


def _decimals(s: str) -> int: return len(s.split('.')[1]) if '.' in s else 0


def numbers_in(text: str) -> list[float]:
    "Every number in `text` (outputs or code), with its value also read as a percentage where it has a % sign"
    out = []
    for m in NUM.finditer(text):
        s, e = m.group(1).replace(',', ''), m.group(2)
        v = float(s) * (10 ** int(e.replace('−', '-')) if e else 1)
        out.append(v)
        if text[m.end():m.end()+1] == '%': out.append(v / 100)
    return out


def prose_text(md: str) -> str:
    "The prose of a markdown cell: no fenced code, math, inline code, link targets, URLs, HTML tags or file names"
    md = re.sub(r'```.*?```', ' ', md, flags=re.S)
    md = re.sub(r'\$\$.*?\$\$|\$[^$\n]+\$', ' ', md, flags=re.S)          # math: formulas, not measurements
    md = re.sub(r'`[^`]*`', ' ', md)
    md = re.sub(r'\]\([^)]*\)', '] ', md)
    md = re.sub(r'https?://\S+', ' ', md)
    md = re.sub(r'<[^>]+>', ' ', md)
    md = re.sub(r'\b[\w./-]+\.(?:ipynb|py|png|csv|html|safetensors|pkl|tgz|ini|yml|yaml|json|md)\b', ' ', md)
    md = re.sub(r'\b\d+\.\d+\.\d+[\w.]*', ' ', md)                      # versions: 2.8.7, 1.9.38
    md = re.sub(r'\b\d+-bit\b', ' ', md)                                 # 16-bit floats: a type, not a claim
    md = re.sub(r'\b(?:[Cc]hapters?|[Qq]uestions?|[Cc]ells?|[Ss]ection|[Pp]art)\s+\d+\w?'
                r'(?:\s*(?:,|and|or|to|–|-)\s*\d+\w?)*', ' ', md)          # chapter 7b, questions 1 and 2
    return md


def prose_numbers(md: str) -> list[tuple[str, list[tuple[float, float]]]]:
    "(the number as written, [(value, tolerance), ...] it may stand for) for every checked number in `md`'s prose"
    text, out = prose_text(md), []
    for m in NUM.finditer(text):
        s, e = m.group(1), m.group(2)
        plain = s.replace(',', '')
        if e:
            v = float(plain) * 10 ** int(e.replace('−', '-')); cands = [(v, abs(v) * 0.05)]
        else:
            v, d = float(plain), _decimals(plain)
            if d == 0 and v <= 12 and ',' not in s: continue
            if d == 0 and 1900 <= v <= 2100: continue                        # years
            tol = 0.5 * 10 ** -d + 1e-12
            unit = (SCALE.match(text, m.end()).group(1) or '').strip()
            cands = [(v, tol)]
            if unit in FACTORS: cands.append((v * FACTORS[unit], tol * FACTORS[unit]))
            if unit == '%': cands.append((v, tol))                          # 98.5% printed as 98.5 or 98.47
        out.append((m.group(0), cands))
    return out


class Haystack:
    "The numbers of a notebook's code and saved outputs, sorted for lookup"
    def __init__(self, nums): self.v = sorted(nums)
    def has(self, value: float, tol: float) -> bool:
        i = bisect.bisect_left(self.v, value - tol)
        return i < len(self.v) and self.v[i] <= value + tol


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get('outputs', []):
        if 'text' in o: parts.append(''.join(o['text']))
        for k in ('text/plain', 'text/html', 'text/markdown', 'text/latex'):
            if k in o.get('data', {}): parts.append(''.join(o['data'][k]))
    return '\n'.join(parts)


def load_allow(path: Path = ALLOW) -> dict[str, set[str]]:
    "notebook name (or `*`) -> the numbers, as written, that it may quote from elsewhere"
    allow: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split('#')[0].strip()
        if not line: continue
        nb, nums = line.split(':', 1)
        allow.setdefault(nb.strip(), set()).update(nums.split())
    return allow


def _key(written: str) -> str: return written.replace(',', '')


def unmatched(nb_path: Path, allow: dict[str, set[str]] | None = None) -> list[str]:
    "The numbers in `nb_path`'s prose that its code and saved outputs do not show, with a bit of context"
    allow = load_allow() if allow is None else allow
    ok = {_key(n) for n in allow.get('*', set()) | allow.get(nb_path.name, set())}
    cells = json.loads(nb_path.read_text())['cells']
    hay = Haystack(n for c in cells if c['cell_type'] == 'code'
                   for n in numbers_in(''.join(c['source']) + '\n' + _outputs_text(c)))
    bad = []
    for i, c in enumerate(cells):
        if c['cell_type'] != 'markdown': continue
        md = ''.join(c['source']); pt = prose_text(md)
        for written, cands in prose_numbers(md):
            if _key(written) in ok or any(hay.has(v, t) for v, t in cands): continue
            j = pt.find(written)
            bad.append(f"cell {i}: {written!r} in \"...{' '.join(pt[max(0, j-50):j+len(written)+30].split())}...\"")
    return bad


def chapters() -> list[Path]: return sorted((ROOT / 'nbs').glob('*.ipynb'))


if __name__ == '__main__':
    paths = [Path(p) for p in sys.argv[1:]] or chapters()
    n = 0
    for p in paths:
        for b in unmatched(p): print(f"{p.name} {b}"); n += 1
    print(f"{n} prose numbers match no output or code")
    sys.exit(1 if n else 0)

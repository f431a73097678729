#!/usr/bin/env python3
"""Fails on what breaks the house rule of issue 11 (run from the repo root): lists library files over N lines of non-test code and functions over M lines (outside #[cfg(test)] modules and tests/)."""
import os, re, sys
FILE_MAX = int(sys.argv[1]) if len(sys.argv) > 1 else 500
FN_MAX = int(sys.argv[2]) if len(sys.argv) > 2 else 80
root = '.'
found = 0
def code_lines(lines):
    # strip test module: from '#[cfg(test)]' followed by 'mod tests' to end
    for i, l in enumerate(lines):
        if l.strip() == '#[cfg(test)]' and i + 1 < len(lines) and re.match(r'\s*mod \w+', lines[i+1]):
            return lines[:i]
    return lines
for dp, dn, fn in os.walk(root):
    if 'target' in dp.split(os.sep) or '/.git' in dp: continue
    for f in fn:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        lines = open(p, encoding='utf-8', errors='replace').read().split('\n')
        is_test = '/tests/' in p or p.startswith('./tests')
        code = code_lines(lines)
        n = sum(1 for l in code if l.strip() and not l.strip().startswith('//'))
        if n > FILE_MAX and not is_test:
            print(f'FILE {p}: {n} lines of code'); found += 1
        if is_test: continue
        i = 0
        while i < len(code):
            m = re.match(r'\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?fn\s+(\w+)', code[i])
            if m:
                depth = 0; started = False; j = i
                while j < len(code):
                    depth += code[j].count('{') - code[j].count('}')
                    if '{' in code[j]: started = True
                    if started and depth <= 0: break
                    if not started and code[j].rstrip().endswith(';'): break
                    j += 1
                length = j - i + 1
                if started and length > FN_MAX:
                    print(f'FN {p}:{i+1} {m.group(5)}: {length} lines'); found += 1
            i += 1

print(f'size rule: {found} over')
sys.exit(1 if found else 0)

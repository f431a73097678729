#!/usr/bin/env python3
"""Fails on a module import cycle within a crate (the house rule of issue 11). Usage: import_cycles.py SRC_DIR...
Module import cycles within each crate: edges from `use crate::x` / `crate::x::` / `super::x` (top-level module
of the path) between top-level modules of a crate's src/. Prints each strongly connected component of size > 1."""
import os, re, sys
def crate_modules(src):
    mods = {}
    for dp, dn, fn in os.walk(src):
        for f in fn:
            if not f.endswith('.rs'): continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, src)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith('.rs') else top
            if top in ('lib', 'main'): continue
            mods.setdefault(top, []).append(p)
    return mods
def strip_tests(text):
    i = text.find('#[cfg(test)]\nmod tests')
    return text if i < 0 else text[:i]
def reexports(src):
    out = {}
    for name in ('lib.rs', 'main.rs'):
        p = os.path.join(src, name)
        if not os.path.exists(p): continue
        t = open(p, encoding='utf-8').read()
        for mod, items in re.findall(r'pub use (\w+)::\{([^}]*)\};', t, re.S):
            for it in re.findall(r'\w+', items): out[it] = mod
        for mod, it in re.findall(r'pub use (\w+)::(\w+);', t): out[it] = mod
    return out
def edges(mods, rex={}):
    g = {m: set() for m in mods}
    for m, files in mods.items():
        for p in files:
            t = strip_tests(open(p, encoding='utf-8').read())
            t = re.sub(r'//[^\n]*', '', t)
            for a in re.findall(r'crate::(\w+)', t):
                a = rex.get(a, a)
                if a in g and a != m: g[m].add(a)
            # use crate::{a, b::c, ...}
            for block in re.findall(r'crate::\{([^;]*?)\};', t, re.S):
                for a in re.findall(r'(?:^|[,{\s])(\w+)(?=\s*(?:::|,|\}|$))', block):
                    a = rex.get(a, a)
                    if a in g and a != m: g[m].add(a)
    return g
def sccs(g):
    idx, low, st, on, out, i = {}, {}, [], set(), [], [0]
    def s(v):
        idx[v] = low[v] = i[0]; i[0] += 1; st.append(v); on.add(v)
        for w in g[v]:
            if w not in idx: s(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            c = []
            while True:
                w = st.pop(); on.discard(w); c.append(w)
                if w == v: break
            out.append(c)
    sys.setrecursionlimit(10000)
    for v in g:
        if v not in idx: s(v)
    return [c for c in out if len(c) > 1]
found = 0
for src in sys.argv[1:]:
    for c in sccs(edges(crate_modules(src), reexports(src))):
        print(f'{src}: cycle among {sorted(c)}')
        found += 1
print(f'import cycles: {found} in {len(sys.argv) - 1} crates')
sys.exit(1 if found else 0)

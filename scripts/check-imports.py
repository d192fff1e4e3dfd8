#!/usr/bin/env python3
"""Fail when the top-level modules of a Rust crate import each other in a circle.

Usage: python3 scripts/check-imports.py [SRC_DIR]      (default: adapter-tokio/src)

Reads every `.rs` file under SRC_DIR, collects the paths that name another part of the crate
(`use crate::a::B;`, grouped `use crate::{a, b::c};`, inline `crate::a::f()`, and `super::` or
`self::` paths once resolved against the file's own module), and builds a graph whose nodes are
the crate's top-level modules. It prints every cycle in that graph (up to 200), with the lines
that make each edge, and exits 1; with no cycle it prints a one-line summary and exits 0 (2 on
bad usage).

Granularity, as issue 15 asks: a top-level module is `SRC_DIR/x.rs` or `SRC_DIR/x/`, and
everything inside it (`x/mod.rs`, `x/y.rs`, inline `mod`s) counts as `x`, so a submodule
importing its parent or a sibling is not an edge. Circles inside one top-level module are left
to that module's author. `lib.rs` and `main.rs` are the crate roots: they declare and wire every
module, so they are not nodes and their imports are not edges; `bin/` holds other crates and
is skipped. A path to a name the root imports (`crate::Tap` after `pub use tap::Tap;` in
`lib.rs`) counts as a path into that module; glob re-exports are not followed, and a path to
an item defined in the root itself names no module.

Test code counts: a `#[cfg(test)] mod tests` is part of its module and a circle through it is
still a circle. Comments (doc comments included, so intra-doc links) and string and character
literals are removed before scanning: they name modules without depending on them. Macros
are scanned as written, `$crate::` excepted; `#[path]` attributes are not followed.

Standard library only, so it runs wherever Python 3 does.
"""

import os
import re
import sys
from collections import defaultdict

ROOTS = {"lib.rs", "main.rs"}
SKIP_DIRS = {"bin"}
IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"
RAW_STRING = re.compile(r'(?:b|c)?r(#*)"')


def strip_code(text):
    """Blank out comments and string/char literals, keeping newlines so line numbers hold."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif c in "bcr" and (m := RAW_STRING.match(text, i)) and not (
            i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(blank(text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime/label ('a, 'static).
            if i + 1 < n and text[i + 1] == "\\":
                j = text.find("'", i + 3)
                j = n if j < 0 else j + 1
            elif i + 2 < n and text[i + 2] == "'":
                j = i + 3
            else:
                j = i + 1
                out.append(c)
                i = j
                continue
            out.append(blank(text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_top(s, sep=","):
    """Split a use-tree list on `sep` outside braces."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def expand_use_tree(tree, prefix=()):
    """Expand `a::{b, c::{d as x, e}}` into segment lists: [a, b], [a, c, d], [a, c, e].

    A renamed leaf keeps its new name as a last segment `as x`.
    """
    tree = tree.strip()
    alias = re.search(r"\s+as\s+(" + IDENT + r")$", tree)
    if alias:
        tree = tree[: alias.start()]
    if tree.startswith("::"):
        tree = tree[2:]
    brace = tree.find("{")
    if brace >= 0 and tree.endswith("}"):
        head = [s.strip() for s in tree[:brace].split("::") if s.strip()]
        paths = []
        for item in split_top(tree[brace + 1:-1]):
            paths.extend(expand_use_tree(item, prefix + tuple(head)))
        if not paths:
            paths.append(list(prefix) + head)
        return paths
    segs = list(prefix) + [s.strip() for s in tree.split("::") if s.strip()]
    return [segs + ["as " + alias.group(1)] if alias else segs]


def without_alias(segs):
    """The path of a use-tree leaf, its `as x` dropped."""
    return segs[:-1] if segs and segs[-1].startswith("as ") else segs


class Scanner:
    """Finds the module references of one file, with the inline `mod` blocks it opens."""

    def __init__(self, file_module, top_modules, root_names):
        self.file_module = file_module  # e.g. ["tap", "relay"]; [] for lib.rs
        self.top_modules = top_modules
        self.root_names = root_names  # names the crate root imports: name -> module

    def resolve(self, segs, current):
        """The top-level module a path names, or None (root item, external crate, self)."""
        segs = [s for s in segs if s]
        if not segs:
            return None
        if segs[0] == "crate":
            rest = segs[1:]
        elif segs[0] in ("super", "self"):
            base = list(current)
            rest = segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if not base:
                        return None  # beyond the root: not valid Rust, ignore
                    base.pop()
                rest = rest[1:]
            rest = base + rest
        else:
            return None
        if rest and rest[0] in self.top_modules:
            return rest[0]
        if rest and rest[0] in self.root_names:
            return self.root_names[rest[0]]
        return None

    def scan(self, code):
        """Yield (line, path text, target module) for every reference in stripped code."""
        token = re.compile(
            r"(?P<mod>\bmod\s+(?P<modname>" + IDENT + r")\s*\{)"
            r"|(?P<use>\buse\s+(?P<tree>[^;]*);)"
            r"|(?P<path>(?<![\$\w:])(?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)"
            r"|(?P<open>\{)|(?P<close>\})"
        )
        stack = []  # (inline module name or None, ) per open brace
        for m in token.finditer(code):
            current = self.file_module + [s for s in stack if s]
            line = code.count("\n", 0, m.start()) + 1
            if m.group("mod"):
                stack.append(m.group("modname"))
            elif m.group("open"):
                stack.append(None)
            elif m.group("close"):
                if stack:
                    stack.pop()
            elif m.group("use"):
                tree = " ".join(m.group("tree").split())
                for segs in map(without_alias, expand_use_tree(tree)):
                    target = self.resolve(segs, current)
                    if target:
                        shown = segs[:-1] if len(segs) > 1 and segs[-1] == "self" else segs
                        yield line, "use " + "::".join(shown), target
            elif m.group("path"):
                segs = [s.strip() for s in m.group("path").split("::")]
                target = self.resolve(segs, current)
                if target:
                    yield line, "::".join(segs), target


def crate_files(src):
    """Yield (path, module path) for every .rs file of the crate under src."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        if parts and parts[0] in SKIP_DIRS:
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            if not parts and name in ROOTS:
                yield os.path.join(dirpath, name), None
                continue
            stem = name[:-3]
            module = parts + ([] if stem == "mod" else [stem])
            yield os.path.join(dirpath, name), module


def root_names(files, top):
    """The names the crate roots import from a top-level module: `pub use tap::Tap;` in lib.rs
    makes `crate::Tap` a path into `tap`. Glob imports (`use tap::*;`) are not followed."""
    names = {}
    for path, module in files:
        if module is not None:
            continue
        with open(path, encoding="utf-8") as f:
            code = strip_code(f.read())
        for m in re.finditer(r"\buse\s+([^;]*);", code):
            for segs in expand_use_tree(" ".join(m.group(1).split())):
                alias = segs[-1][3:] if segs[-1].startswith("as ") else None
                segs = without_alias(segs)
                if segs and segs[0] in ("crate", "self"):
                    segs = segs[1:]
                if len(segs) < 2 or segs[0] not in top or segs[-1] == "*":
                    continue
                name = alias or (segs[-2] if segs[-1] == "self" else segs[-1])
                names.setdefault(name, segs[0])
    return names


def build_graph(src):
    """Edges between top-level modules: {(from, to): [(file, line, path), ...]}."""
    files = list(crate_files(src))
    top = {m[0] for _, m in files if m}
    names = root_names(files, top)
    edges = defaultdict(list)
    for path, module in files:
        if module is None:
            continue  # a crate root: it wires everything, not a node
        with open(path, encoding="utf-8") as f:
            code = strip_code(f.read())
        for line, text, target in Scanner(module, top, names).scan(code):
            if target != module[0]:
                rel = os.path.relpath(path, src)
                edges[(module[0], target)].append((rel, line, text))
    return top, edges


def strongly_connected(nodes, succ):
    """Tarjan's algorithm; returns the components, each a sorted list."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(nodes)))
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return comps


def simple_cycles(comp, succ, limit):
    """Every elementary cycle of one component, each starting at its smallest module."""
    cycles = []
    members = set(comp)
    for start in comp:
        allowed = {v for v in members if v >= start}

        def walk(v, path, seen):
            for w in sorted(succ[v] & allowed):
                if len(cycles) >= limit:
                    return
                if w == start:
                    cycles.append(path + [start])
                elif w not in seen:
                    seen.add(w)
                    walk(w, path + [w], seen)
                    seen.discard(w)

        walk(start, [start], {start})
        if len(cycles) >= limit:
            break
    return cycles


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    src = argv[1] if len(argv) == 2 else "adapter-tokio/src"
    if not os.path.isdir(src):
        print(f"check-imports: {src} is not a directory", file=sys.stderr)
        return 2
    top, edges = build_graph(src)
    succ = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    comps = [c for c in strongly_connected(top, succ) if len(c) > 1]
    if not comps:
        print(f"check-imports: {src}: {len(top)} modules, {len(edges)} module-to-module "
              "edges, no cycle")
        return 0
    limit = 200
    total = 0
    for comp in comps:
        print(f"check-imports: {src}: modules in a circle: {', '.join(comp)}")
        cycles = simple_cycles(comp, succ, limit)
        for cycle in cycles:
            total += 1
            print(f"  cycle: {' -> '.join(cycle)}")
            for a, b in zip(cycle, cycle[1:]):
                refs = edges[(a, b)]
                file, line, text = refs[0]
                more = f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""
                print(f"    {a} -> {b}: {file}:{line}: {text}{more}")
        if len(cycles) >= limit:
            print(f"  (stopped after {limit} cycles)")
    print(f"check-imports: {total} cycle(s) between top-level modules of {src}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

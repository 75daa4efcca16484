#!/usr/bin/env python3
"""check-signatures.py SOURCE_DIR

The reference must show the prototype the header declares.  For every
MPROC_EXTERN function of include/mproc/*.h, each backquoted prototype naming
it in a heading of docs/reference/*.md ("##" to "####"; a heading may list
several, e.g. "### `int mproc_a(void)` / `int mproc_b(void)`") must equal the
header's declaration: return type, name, parameter types and names, compared
token by token so that whitespace and line breaks do not matter.  Attributes
(`__attribute__((...))`) and MPROC_EXTERN are not part of the prototype.
check-reference.sh already requires a heading for every function; here a
heading that names a function without its prototype is an error too, so the
signature cannot be left out to dodge the check, and a heading showing the
prototype of a function no header declares (removed, or renamed) is stale.

Structures are checked as well: a public `struct mproc_*` that the reference
documents field by field (the paragraphs naming `mproc_x`, with or without
`struct`, with the table right after them, and the sections under headings
naming it, together name at least half of its fields in backquotes) must
name every field, and a field written with its type (a table cell such as
"`size_t chunksize`") must carry the header's type.

check-signatures.py --self-test   checks the checker on a made-up tree: a
drifted parameter name, a drifted return type, a missing prototype, a
heading for a function no header has, a missing field and a field of the
wrong type must fail; the corrected tree must pass.
"""
import glob
import os
import re
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
split_args = __import__("check-doc-snippets").split_args  # top-level commas

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\.\.\.|[0-9]+|\S")


def tokens(text):
    """The C tokens of text, so that spacing never counts."""
    return TOKEN.findall(text)


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def strip_attributes(text):
    """Remove __attribute__((...)) with its balanced parentheses."""
    out = []
    i = 0
    while True:
        j = text.find("__attribute__", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("(", j)
        depth = 0
        while k < len(text):
            if text[k] == "(":
                depth += 1
            elif text[k] == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1


def declared_name(proto):
    """The function a prototype declares: the first mproc_ name called."""
    m = re.search(r"\b(mproc_[A-Za-z0-9_]+)\s*\(", proto)
    return m.group(1) if m else None


def header_functions(src):
    """{name: (token list, file)} of every MPROC_EXTERN declaration."""
    funcs = {}
    for path in sorted(glob.glob(os.path.join(src, "include", "mproc", "*.h"))):
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        for m in re.finditer(r"\bMPROC_EXTERN\b([^;]*);", text):
            decl = strip_attributes(m.group(1))
            if "#" in decl:  # the #define of MPROC_EXTERN itself
                continue
            name = declared_name(decl)
            if name:
                funcs[name] = (tokens(decl), os.path.relpath(path, src))
    return funcs


def split_declarators(body):
    """Member declarations of a struct body: [(name, type tokens)].  The
    public structs nest no struct or union, so every ';' ends a member."""
    fields = []
    for decl in body.split(";"):
        fields.extend(member(decl))
    return fields


def member(decl):
    decl = strip_attributes(decl).strip()
    if not decl:
        return []
    fp = re.search(r"\(\s*\*\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", decl)
    if fp:  # a function pointer: its type is the whole declaration
        return [(fp.group(1), tokens(decl.replace(fp.group(1), "", 1)))]
    parts = split_args(decl)
    first = re.match(r"(.*?)([A-Za-z_][A-Za-z0-9_]*)\s*(\[[^]]*\])?\s*(:\s*\d+)?\s*$", parts[0], re.S)
    if not first:
        return []
    base = first.group(1)
    base_no_ptr = base.rstrip().rstrip("*")
    out = [(first.group(2), tokens(base + (first.group(3) or "")))]
    for p in parts[1:]:
        m = re.match(r"\s*(\**)\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\[[^]]*\])?", p)
        if m:
            out.append((m.group(2), tokens(base_no_ptr + m.group(1) + (m.group(3) or ""))))
    return out


def header_structs(src):
    """{struct name: {field: type tokens}} of the public headers."""
    structs = {}
    for path in sorted(glob.glob(os.path.join(src, "include", "mproc", "*.h"))):
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        text = re.sub(r"^\s*#.*$", "", text, flags=re.M)
        for m in re.finditer(r"\bstruct\s+(mproc_[A-Za-z0-9_]+)\s*\{", text):
            depth = 1
            i = m.end()
            while depth and i < len(text):
                depth += text[i] == "{"
                depth -= text[i] == "}"
                i += 1
            structs[m.group(1)] = dict(split_declarators(text[m.end() : i - 1]))
    return structs


def reference_pages(src):
    pages = []
    for path in sorted(glob.glob(os.path.join(src, "docs", "reference", "*.md"))):
        with open(path, encoding="utf-8") as f:
            pages.append((os.path.relpath(path, src), f.read()))
    return pages


def check_functions(src, funcs, pages):
    errors = []
    seen = set()
    for page, text in pages:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not re.match(r"#{2,4} ", line):
                continue
            for span in re.findall(r"`([^`]*)`", line):
                name = declared_name(span)
                if name is None:
                    continue
                if name not in funcs:
                    errors.append(
                        "%s:%d: %s is in no header (removed or renamed?): `%s`" % (page, lineno, name, span)
                    )
                    continue
                seen.add(name)
                want, header = funcs[name]
                got = tokens(strip_attributes(span))
                if got != want:
                    errors.append(
                        "%s:%d: %s differs from %s\n  reference: %s\n  header:    %s"
                        % (page, lineno, name, header, " ".join(got), " ".join(want))
                    )
    for name in sorted(set(funcs) - seen):
        errors.append(
            "no heading shows the prototype of %s (%s): want a heading with `%s`"
            % (name, funcs[name][1], " ".join(funcs[name][0]))
        )
    return errors


def blocks(text, sname):
    """The text that may list the fields of struct sname: each paragraph
    naming it (with a table that follows it directly), and the whole
    section under a heading that names it (a function filling the struct).
    A bare name counts too (typedef'd option structs), but not a call of
    a function of the same name (mproc_pool_stats)."""
    pattern = re.compile(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_(])" % sname)
    out = []
    for section in re.split(r"\n(?=#{2,4} )", text):
        heading, _, body = section.partition("\n")
        if pattern.search(heading):
            out.append(body)
            continue
        paras = re.split(r"\n\s*\n", section)
        for i, p in enumerate(paras):
            p = "\n".join(l for l in p.split("\n") if not re.match(r"#{1,4} ", l))
            if not pattern.search(p):
                continue
            if i + 1 < len(paras) and paras[i + 1].lstrip().startswith("|"):
                p += "\n" + paras[i + 1]
            out.append(p)
    return out


def check_structs(structs, pages):
    errors = []
    for sname, fields in sorted(structs.items()):
        if not fields:
            continue
        named = {}  # field -> [(page, backquoted text)]
        for page, text in pages:
            for b in blocks(text, sname):
                for span in re.findall(r"`([^`\n]*)`", b):
                    for decl in span.split(";"):
                        m = re.match(r"^\s*(.*?)\b([A-Za-z_][A-Za-z0-9_]*)\s*(\[[^]]*\])?\s*$", decl)
                        if m and m.group(2) in fields:
                            named.setdefault(m.group(2), []).append((page, decl.strip()))
        if len(named) < 2 or len(named) * 2 < len(fields):
            continue  # not documented field by field
        for fname in fields:
            if fname not in named:
                pages_of = sorted({p for v in named.values() for p, _ in v})
                errors.append(
                    "%s: struct %s documents its fields but not `%s`" % (", ".join(pages_of), sname, fname)
                )
                continue
            for page, decl in named[fname]:
                typed = member(decl)
                prefix = decl[: decl.rfind(fname)]
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ *]*", prefix):
                    continue  # `opts->x` or `x`: no type written
                if typed and typed[0][1] != fields[fname]:
                    errors.append(
                        "%s: struct %s field `%s` is `%s` in the reference, `%s %s` in the header"
                        % (page, sname, fname, decl, " ".join(fields[fname]), fname)
                    )
    return errors


def check(src):
    funcs = header_functions(src)
    if not funcs:
        print("FAIL: no MPROC_EXTERN declarations found under %s/include" % src)
        return 1
    pages = reference_pages(src)
    errors = check_functions(src, funcs, pages) + check_structs(header_structs(src), pages)
    for e in errors:
        print(e)
    print("%d public functions checked, %d drift(s)" % (len(funcs), len(errors)))
    return 1 if errors else 0


HEADER = """\
#include <stddef.h>
struct mproc_demo_options {
  unsigned flags;   /* none */
  size_t chunksize, *sizes;
  void (*cb)(int x, void *ud);
  char name[16];
};
MPROC_EXTERN int mproc_demo_open(const struct mproc_demo_options *opts,
                                 int   count);
MPROC_EXTERN void *
mproc_demo_buf(void);
MPROC_EXTERN int mproc_demo_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
"""
PAGE = """\
# demo
### `int mproc_demo_open(const struct mproc_demo_options *opts, int count)`
### `void* mproc_demo_buf( void )` / `int mproc_demo_fail(int code, const char *fmt, ...)`

`struct mproc_demo_options`:

| field | meaning |
|---|---|
| `unsigned flags` | none |
| `size_t chunksize` | items per task |
| `sizes` | sizes |
| `cb` | called |
| `char name[16]` | a name |
"""


def self_test():
    t = tempfile.mkdtemp()
    try:
        os.makedirs(os.path.join(t, "include", "mproc"))
        os.makedirs(os.path.join(t, "docs", "reference"))
        with open(os.path.join(t, "include", "mproc", "demo.h"), "w") as f:
            f.write(HEADER)
        page = os.path.join(t, "docs", "reference", "demo.md")

        def run(text):
            with open(page, "w") as f:
                f.write(text)
            import io
            import contextlib

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = check(t)
            return rc, buf.getvalue()

        rc, out = run(PAGE)
        if rc != 0:
            print("FAIL: a true reference failed:\n" + out)
            return 1
        drifts = [
            ("a drifted parameter name", PAGE.replace("int count)", "int n)"), "mproc_demo_open differs"),
            ("a drifted return type", PAGE.replace("`void* mproc_demo_buf", "`int *mproc_demo_buf"),
             "mproc_demo_buf differs"),
            ("a heading without the prototype", PAGE.replace("/ `int mproc_demo_fail(int code, const char *fmt, ...)`",
                                                             "/ `mproc_demo_fail`"),
             "no heading shows the prototype of mproc_demo_fail"),
            ("a heading for a function the header lacks",
             PAGE + "### `int mproc_demo_close(int fd)`\n", "mproc_demo_close is in no header"),
            ("a missing field", PAGE.replace("| `cb` | called |\n", ""), "not `cb`"),
            ("a missing field of a struct named by its typedef",
             PAGE.replace("`struct mproc_demo_options`:", "`mproc_demo_options`:").replace("| `cb` | called |\n", ""),
             "not `cb`"),
            ("a field of the wrong type", PAGE.replace("`size_t chunksize`", "`int chunksize`"),
             "field `chunksize` is `int chunksize`"),
        ]
        for what, text, expect in drifts:
            rc, out = run(text)
            if rc == 0 or expect not in out:
                print("FAIL: %s was not reported as expected (%r):\n%s" % (what, expect, out))
                return 1
        print("self-test OK")
        return 0
    finally:
        shutil.rmtree(t)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        sys.exit(self_test())
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else "."))

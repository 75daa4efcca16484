#!/usr/bin/env python3
"""check-doc-snippets.py SOURCE_DIR CC LIBMPROC

Compiles every C snippet (a ```c fenced block) of README.md and
docs/**/*.md against the public headers, so the documentation cannot drift
from the API.  A snippet that defines main() is a whole program: it is also
linked against LIBMPROC (the shared library of the build tree) and run, and
must exit with status 0 within a bounded time.

Any other snippet is a fragment.  Its lines at column 0 that start a
definition ("static", "typedef", "struct", "enum", "#define") are placed at file
scope, in order, as do the MPROC_ELEMENT_FN... definitions of typed.h; every
other line becomes the body of a function.  What a
fragment assumes but does not show (the variables it uses, the task
functions it names) is written in the markdown, in HTML comments right before
the block, which renderers do not show:

    <!-- snippet-globals
    static int square(const void *in, void *out);
    -->
    <!-- snippet-locals
    mproc_pool *pool; int numbers[8], squares[8];
    -->

snippet-globals go to file scope before the fragment's definitions,
snippet-locals to the start of the function body.  A snippet that truly
cannot compile (pseudo-code) is marked with

    <!-- snippet: partial REASON -->

and is listed, never compiled; the reason is required.  Fragments are
compiled with -Wall -Wextra -Werror, less the warnings every fragment would
raise (unused and uninitialised variables), so a wrong type, a wrong
argument count or an unknown name fails the test.

Every mproc_/MPROC_ name the pages mention, in or out of snippets, must
also exist in the headers (a renamed function leaves no stale mention).

check-doc-snippets.py --self-test CC LIBMPROC   checks the checker itself.
MPROC_SNIPPET_FLAGS in the environment adds compiler flags (a sanitized
library needs its -fsanitize=... in the programs linked against it).
"""
import os
import re
import subprocess
import sys
import tempfile

FLAGS = ["-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-variable", "-Wno-unused-parameter", "-Wno-unused-function",
         "-Wno-unused-but-set-variable", "-Wno-uninitialized",
         "-Wno-unknown-warning-option", "-Wno-maybe-uninitialized"]
# Headers a fragment may use without saying so: the ones a reader already has.
PRELUDE = """#include <mproc.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
"""
RUN_TIMEOUT = 60 * float(os.environ.get("MPROC_TEST_TIMEOUT_SCALE", "1") or 1)
TOP_LEVEL = re.compile(r"^(static |typedef |struct [A-Za-z_0-9 ]*\{|enum |#define |MPROC_ELEMENT_FN)")
HIDDEN = re.compile(r"<!--\s*snippet-(globals|locals)\s*\n(.*?)-->", re.S)
PARTIAL = re.compile(r"<!--\s*snippet:\s*partial(.*?)-->", re.S)


def snippets(path):
    """Yields (line, code, globals, locals, partial_reason) per ```c block."""
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    i = 0
    pending = ""  # the markdown between the previous block and this one
    while i < len(lines):
        if lines[i].strip() == "```c":
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            # Only the HTML comments directly above the block belong to it.
            above = comments_above(pending)
            g = "".join(m.group(2) for m in HIDDEN.finditer(above) if m.group(1) == "globals")
            loc = "".join(m.group(2) for m in HIDDEN.finditer(above) if m.group(1) == "locals")
            p = PARTIAL.search(above)
            yield start, "\n".join(lines[start:j]), g, loc, (p.group(1).strip() if p else None)
            pending = ""
            i = j + 1
            continue
        pending += lines[i] + "\n"
        i += 1


def comments_above(text):
    """The HTML comments that end text, with nothing but blanks between."""
    found = []
    text = text.rstrip()
    while text.endswith("-->"):
        start = text.rfind("<!--")
        if start < 0:
            break
        found.insert(0, text[start:])
        text = text[:start].rstrip()
    return "\n".join(found)


def strip_literals(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])*'", "''", line)
    line = re.sub(r"/\*.*?\*/", "", line)
    return re.sub(r"//.*", "", line)


def split_fragment(code):
    """File-scope definitions and function-body lines of a fragment."""
    top, body = [], []
    depth, in_top, in_comment_block = 0, False, False
    for line in code.split("\n"):
        bare = strip_literals(line)
        if in_comment_block:
            (top if in_top else body).append(line)
            if "*/" in bare:
                in_comment_block = False
            continue
        if depth == 0 and not in_top and TOP_LEVEL.match(line):
            in_top = True
        (top if in_top else body).append(line)
        if "/*" in bare:
            in_comment_block = True
            bare = bare.split("/*")[0]
        depth += bare.count("{") - bare.count("}")
        if in_top and depth == 0 and (bare.rstrip().endswith(("}", ";")) or line.startswith("#") or
                                      (line.startswith("MPROC_") and bare.rstrip().endswith(")"))):
            in_top = False
    return "\n".join(top), "\n".join(body)


def compile_one(cc, src, out, link):
    cmd = [cc] + FLAGS + os.environ.get("MPROC_SNIPPET_FLAGS", "").split() + ["-I", INCLUDE, "-x", "c", "-", "-o", out]
    if link:
        cmd += ["-L", os.path.dirname(LIB), "-Wl,-rpath," + os.path.dirname(LIB), "-lmproc", "-pthread"]
    else:
        cmd.insert(1, "-c")
    r = subprocess.run(cmd, input=src, capture_output=True, text=True)
    return r.returncode, r.stderr


def check_file(cc, path, tmp, report):
    bad = 0
    for n, (line, code, g, loc, partial) in enumerate(snippets(path)):
        where = "%s:%d" % (path, line)
        if partial is not None:
            if not partial:
                report("FAIL %s: 'snippet: partial' needs a reason" % where)
                bad += 1
            else:
                report("partial %s (%s): not compiled" % (where, partial))
            continue
        exe = os.path.join(tmp, "snippet%d" % n)
        if re.search(r"\bint\s+main\s*\(", code):
            src = g + "\n" + code + "\n"
            rc, err = compile_one(cc, src, exe, True)
            if rc != 0:
                report("FAIL %s: the program does not compile:\n%s" % (where, err))
                bad += 1
                continue
            try:
                r = subprocess.run([exe], capture_output=True, text=True, cwd=tmp,
                                   timeout=RUN_TIMEOUT, start_new_session=True)
            except subprocess.TimeoutExpired:
                report("FAIL %s: the program ran over %.0f s" % (where, RUN_TIMEOUT))
                bad += 1
                continue
            if r.returncode != 0:
                report("FAIL %s: the program exited %d:\n%s%s" % (where, r.returncode, r.stdout, r.stderr))
                bad += 1
                continue
            report("ok %s (program, ran)" % where)
        else:
            top, body = split_fragment(code)
            src = "%s\n%s\n%s\nvoid mproc_doc_snippet(void);\nvoid mproc_doc_snippet(void) {\n%s\n%s\n}\n" % (
                PRELUDE, g, top, loc, body)
            rc, err = compile_one(cc, src, exe + ".o", False)
            if rc != 0:
                report("FAIL %s: the fragment does not compile:\n%s\n--- as compiled ---\n%s"
                       % (where, err, src))
                bad += 1
                continue
            report("ok %s (fragment, compiled)" % where)
    return bad


def doc_files(src):
    files = [os.path.join(src, "README.md")]
    for root, _, names in sorted(os.walk(os.path.join(src, "docs"))):
        files += [os.path.join(root, f) for f in sorted(names) if f.endswith(".md")]
    return [f for f in files if os.path.exists(f)]


# A CMake target (mproc::mproc_static) is not a C name: "::" before it.
NAME = re.compile(r"(?<!::)\b(?:mproc|MPROC)_[A-Za-z0-9_]*[A-Za-z0-9](?![A-Za-z0-9_*])")


def header_names(src):
    """Every mproc_/MPROC_ identifier the headers define or use, plus the
    MPROC_<NAME> codes MPROC_ERRNO_MAP generates."""
    names = {"MPROC_OK"}
    for root, _, files in os.walk(os.path.join(src, "include")):
        for f in files:
            text = open(os.path.join(root, f), encoding="utf-8").read()
            names |= set(NAME.findall(text))
            names |= {"MPROC_" + c for c in re.findall(r"^\s*X\(([A-Z0-9_]+),", text, re.M)}
    return names


DECL = re.compile(r"MPROC_EXTERN\s+[^;{}]*?\b(mproc_\w+)\s*\((.*?)\)\s*(?:__attribute__\s*\(\(.*?\)\))?\s*;",
                  re.S)
CODE_SPAN = re.compile(r"`[^`]+`")
CALL_START = re.compile(r"\b(mproc_\w+)\(")


def calls(line):
    """(span, name, argument text) for each mproc_x(...) in a code span,
    with balanced parentheses (function-pointer parameters included)."""
    for span in CODE_SPAN.findall(line):
        for m in CALL_START.finditer(span):
            depth, i = 1, m.end()
            while i < len(span) and depth:
                depth += {"(": 1, ")": -1}.get(span[i], 0)
                i += 1
            if depth == 0:
                yield span, m.group(1), span[m.end():i - 1]


def split_args(text):
    """Top-level comma-separated parts of an argument or parameter list."""
    parts, depth, cur = [], 0, ""
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def header_arities(src):
    """{function: (fixed parameter count, variadic)} from the headers."""
    out = {}
    for root, _, files in os.walk(os.path.join(src, "include")):
        for f in files:
            text = open(os.path.join(root, f), encoding="utf-8").read()
            text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
            for m in DECL.finditer(text):
                params = [p for p in split_args(m.group(2)) if p != "void"]
                out[m.group(1)] = (len([p for p in params if p != "..."]), "..." in params)
    return out


def check_names(path, known, report, arities=None):
    """Names of the API a page mentions that the headers do not have (prefixes
    such as mproc_pool_* and abbreviations such as _free are not names), and
    calls written in running text (`mproc_x(a, b)`) with a wrong number of
    arguments (`mproc_x()` merely names a function).  Code blocks are left to
    the compiler."""
    bad, fence = 0, False
    for n, line in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
        for name in NAME.findall(line):
            if name not in known:
                report("FAIL %s:%d: %s is not declared in include/" % (path, n, name))
                bad += 1
        if line.startswith("```"):
            fence = not fence
        if fence or not arities:
            continue
        for span, name, args in calls(line):
            # `f()` names a function in running text; `(void)` is a prototype's.
            if name not in arities or "..." in args or not args.strip():
                continue
            got = 0 if args.strip() == "void" else len(split_args(args))
            want, variadic = arities[name]
            if got != want and not (variadic and got >= want):
                report("FAIL %s:%d: %s takes %d argument(s), the text gives %d: %s"
                       % (path, n, name, want, got, span))
                bad += 1
    return bad


def run(src, cc):
    bad = total = 0
    known = header_names(src)
    arities = header_arities(src)
    with tempfile.TemporaryDirectory() as tmp:
        for f in doc_files(src):
            n = sum(1 for _ in snippets(f))
            total += n
            bad += check_file(cc, f, tmp, print)
            bad += check_names(f, known, print, arities)
    print("%d snippets checked, %d problems" % (total, bad))
    if total == 0:
        print("FAIL: no C snippet found under %s" % src)
        return 1
    return 1 if bad else 0


def self_test(cc):
    cases = {
        # A fragment with a wrong argument must fail.
        "```c\nmproc_sem_new(2, NULL, &s);\n```\n": 1,
        # The same, correct, with its locals hidden above it, passes.
        "<!-- snippet-locals\nmproc_sem *s;\n-->\n```c\nmproc_sem_new(&s, 2, NULL);\n```\n": 0,
        # A function at file scope and statements using it.
        "<!-- snippet-locals\nmproc_pool *pool;\n-->\n```c\nstatic int sq(const void *in, void *out) {\n"
        "  *(int *)out = *(const int *)in; return 0;\n}\nint a[2], b[2];\n"
        "mproc_pool_map(pool, sq, a, 2, sizeof(int), b, sizeof(int), NULL, NULL, -1);\n```\n": 0,
        # A whole program that fails at run time must fail.
        "```c\n#include <mproc.h>\nint main(void) { return mproc_cpu_count() > 0; }\n```\n": 1,
        "```c\n#include <mproc.h>\nint main(void) { return mproc_cpu_count() > 0 ? 0 : 1; }\n```\n": 0,
        # A partial snippet needs a reason; with one it is skipped.
        "<!-- snippet: partial -->\n```c\nnot C\n```\n": 1,
        "<!-- snippet: partial pseudo-code -->\n```c\nnot C\n```\n": 0,
        # Locals belong to the next block only.
        "<!-- snippet-locals\nmproc_sem *s;\n-->\n```c\nmproc_sem_new(&s, 2, NULL);\n```\n"
        "text\n```c\nmproc_sem_new(&s, 2, NULL);\n```\n": 1,
    }
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (md, want) in enumerate(cases.items()):
            path = os.path.join(tmp, "case%d.md" % i)
            open(path, "w").write(md)
            got = 1 if check_file(cc, path, tmp, lambda s: None) else 0
            if got != want:
                print("FAIL: case %d %s, expected %s:\n%s" % (i, "failed" if got else "passed",
                                                            "failure" if want else "success", md))
                fails += 1
    # A stale name fails; a prefix, a wildcard or a generated code does not.
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    known = header_names(src)
    arities = header_arities(src)
    with tempfile.TemporaryDirectory() as tmp:
        for md, want in {"`mproc_pool_sumbit(pool)`\n": 1, "`mproc_pool_*`, `MPROC_E*`, `MPROC_EPERM`,"
                         " `mproc_pool_submit`, mproc_pool_ and `_free`\n": 0,
                         # The guide's old Semaphore row: three arguments, but a
                         # value_new with two is caught.
                         "| `mproc_value_new(MPROC_TYPE_INT32, &c)` |\n": 1,
                         "| `mproc_sem_new(&s, n, NULL)`, `mproc_cpu_count()`, "
                         "`mproc_task_fail(ctx, 0, \"%s\", m)`, `mproc_rlock_init(...)` |\n": 0}.items():
            path = os.path.join(tmp, "names.md")
            open(path, "w").write(md)
            got = 1 if check_names(path, known, lambda s: None, arities) else 0
            if got != want:
                print("FAIL: names check %s on: %s" % ("failed" if got else "passed", md))
                fails += 1
    print("self-test OK" if not fails else "self-test FAILED")
    return 1 if fails else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        _, cc, LIB = args[:3]
        LIB = os.path.abspath(LIB)
        INCLUDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include")
        sys.exit(self_test(cc))
    if len(args) != 3:
        sys.exit(__doc__)
    source, cc, LIB = args
    LIB = os.path.abspath(LIB)
    INCLUDE = os.path.join(source, "include")
    sys.exit(run(source, cc))

#!/usr/bin/env python3
"""gen-man.py SOURCE_DIR OUT_DIR

Writes the manual pages of the library from its one source of truth:
  OUT_DIR/man3/<function>.3  one page per public function (every MPROC_EXTERN
                             declaration of include/, and every function-like
                             macro with a heading of its own): the SYNOPSIS is the
                             declaration from the header, the DESCRIPTION the
                             text under the function's heading in
                             docs/reference/*.md (the entry check-reference.sh
                             requires), with the page's other entries in
                             SEE ALSO;
  OUT_DIR/man7/mproc.7       the overview: README.md's introduction and
                             conventions, and every concept with its functions.
Fails, naming it, when a public function has no reference entry.  Needs
only python3: the small Markdown subset the reference pages use (paragraphs,
lists, tables, code blocks, inline code, emphasis, links) is turned into
man(7) roff here.
"""
import os
import re
import sys

DECL = re.compile(r"MPROC_EXTERN\s+([^;{}]*?\b(mproc_\w+)\s*\(.*?\))\s*(?:__attribute__\s*\(\(.*?\)\))?\s*;",
                  re.S)
HEADING = re.compile(r"^(#{1,4}) +(.*)$")


def version(src):
    text = open(os.path.join(src, "include/mproc/version.h")).read()
    parts = [re.search(r"#define MPROC_VERSION_%s (\d+)" % p, text).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def declarations(src):
    """{name: prototype} for every MPROC_EXTERN function under include/."""
    out = {}
    for root, _, files in os.walk(os.path.join(src, "include")):
        for f in sorted(files):
            if not f.endswith(".h"):
                continue
            text = open(os.path.join(root, f)).read()
            text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
            text = re.sub(r"//[^\n]*", " ", text)
            for m in DECL.finditer(text):
                out[m.group(2)] = re.sub(r"\s+", " ", m.group(1)).replace("( ", "(").strip() + ";"
    return out


def sections(path):
    """(level, heading, body lines) for each heading of a markdown page."""
    out, cur, fence = [], None, False
    for line in open(path, encoding="utf-8").read().split("\n"):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else HEADING.match(line)
        if m:
            cur = (len(m.group(1)), m.group(2), [])
            out.append(cur)
        elif cur is not None:
            cur[2].append(line)
    return out


def esc(text):
    """Roff-escapes plain text."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # Non-ASCII characters as groff escapes: the page renders without preconv.
    return "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)


def inline(text):
    """Markdown inline markup to roff font changes."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append("\\fB" + esc(p[1:-1]) + "\\fR")
            continue
        p = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", p)  # links: their text
        p = esc(p)
        p = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", p)
        p = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\\fI\1\\fR", p)
        out.append(p)
    line = "".join(out)
    return "\\&" + line if line[:1] in (".", "'") else line


def plain(text):
    """Markdown inline text without markup (for NAME lines)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return text.replace("`", "").replace("**", "")


def body_to_roff(lines):
    out, para, fence = [], [], False

    def flush():
        if para:
            out.append(inline(" ".join(s.strip() for s in para)))
            para.clear()

    for line in lines:
        if line.startswith("```"):
            flush()
            if not fence:
                out += [".PP", ".RS 4", ".nf"]
            else:
                out += [".fi", ".RE"]
            fence = not fence
            continue
        if fence:
            out.append("\\&" + esc(line))
            continue
        s = line.strip()
        if not s:
            flush()
            if out and out[-1] != ".PP":
                out.append(".PP")
            continue
        if s.startswith("|"):
            flush()
            cells = [c.strip() for c in s.strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                continue
            out += [".TP", inline(cells[0]), inline(" \u2014 ".join(c for c in cells[1:] if c)) or "\\&"]
            continue
        m = re.match(r"^\s*[*-] +(.*)$", line)
        if m:
            flush()
            out.append(".IP \\(bu 2")
            para.append(m.group(1))
            continue
        para.append(line)
    flush()
    while out and out[-1] == ".PP":
        out.pop()
    return out


def summary(lines):
    """The first sentence of a body, without markup, for the NAME line."""
    text = " ".join(l.strip() for l in lines if l.strip() and not l.startswith(("```", "|")))
    text = plain(text)
    m = re.match(r"(.+?[.])(\s|$)", text)
    s = m.group(1) if m else text
    s = s.rstrip(".:;")
    if len(s) > 90:
        s = shorten(s, 90)
    return s or "see DESCRIPTION"


def shorten(s, width):
    """s cut to at most `width` characters at the end of a clause, outside
    parentheses, so that a NAME line (what apropos and man -k show) reads as
    a phrase: the first "; ", ": ", " (" or dash that leaves at least 24
    characters, else the first ", ", else a cut at a word with "..."."""
    depth, strong, weak = 0, 0, 0
    for i, c in enumerate(s[:width + 1]):
        if c in "([{":
            if c == "(" and depth == 0 and i > 0 and s[i - 1] == " " and i - 1 >= 24:
                strong = strong or i - 1
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and i >= 24 and s[i + 1:i + 2] in (" ", ""):
            if c in ";:":
                strong = strong or i
            elif c == ",":
                weak = weak or i
        elif depth == 0 and i >= 24 and s.startswith(" \u2014", i):
            strong = strong or i
    cut = strong or weak
    if cut:
        return s[:cut].rstrip(" ,;:")
    return s[:width - 3].rsplit(" ", 1)[0] + "..."


def stacked(secs):
    """The sections with each run of headings stacked on one body (headings
    of one level, all but the last with nothing under them: `mproc_value_new`
    right above `mproc_array_new` and their shared text) merged into one
    section: every function of the run gets the run's body and is
    documented together with the others, instead of an empty page."""
    out, run = [], []
    for lvl, heading, body in secs:
        if run and lvl != run[0][0]:
            out += run
            run = []
        run.append((lvl, heading, body))
        if any(l.strip() for l in body):
            out.append((lvl, " ".join(h for _, h, _ in run), body))
            run = []
    return out + run


def names_in(heading, known):
    return [n for n in re.findall(r"\bmproc_\w+", heading) if n in known]


def th(name, section, ver, title):
    return ['.\\" Generated by scripts/gen-man.py from docs/reference and include/; do not edit.',
            '.TH %s %s "" "mproc %s" "%s"' % (esc(name.upper()), section, ver, title)]


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(src, out):
    ver = version(src)
    decls = declarations(src)
    if not decls:
        sys.exit("gen-man.py: no MPROC_EXTERN declarations under %s/include" % src)
    refdir = os.path.join(src, "docs/reference")
    pages = sorted(f for f in os.listdir(refdir) if f.endswith(".md"))
    entry = {}       # function -> (page, heading, body)
    concepts = []    # (page title, [functions])
    for page in pages:
        secs = sections(os.path.join(refdir, page))
        title = next((plain(h) for lvl, h, _ in secs if lvl == 1), page[:-3])
        funcs = []
        for lvl, heading, body in stacked(secs):
            if lvl < 2:
                continue
            for n in names_in(heading, decls):
                if n not in entry:
                    entry[n] = (page, heading, body)
                    funcs.append(n)
        # Function-like macros documented with a heading of their own
        # (`MPROC_MAP(pool, ...)` in typed.md) get a page too; their synopsis
        # is the heading.
        for lvl, heading, body in secs:
            m = re.fullmatch(r"`(MPROC_[A-Z0-9_]+)\((.*)\)`", heading.strip())
            if lvl >= 3 and m and m.group(1) not in entry:
                decls[m.group(1)] = "%s(%s)  /* a macro */" % (m.group(1), m.group(2))
                entry[m.group(1)] = (page, heading, body)
                funcs.append(m.group(1))
        concepts.append((title, page, funcs))
    missing = sorted(set(decls) - set(entry))
    if missing:
        sys.exit("gen-man.py: no reference entry (a heading in docs/reference/*.md) for: " +
                 ", ".join(missing))
    for name in sorted(decls):
        page, heading, body = entry[name]
        siblings = [n for t, p, fs in concepts if p == page for n in fs if n != name]
        lines = th(name, 3, ver, "mproc Library Functions")
        lines += [".SH NAME", "%s \\- %s" % (esc(name), esc(summary(body)))]
        lines += [".SH SYNOPSIS", ".nf", ".B #include <mproc.h>", ".PP"]
        lines += [".B " + esc(decls[name])]
        lines += [".fi", ".PP", "Link with \\fB\\-lmproc\\fR (pkg-config: \\fBmproc\\fR).",
                  ".SH DESCRIPTION"]
        others = [n for n in names_in(heading, decls) if n != name]
        if others:
            lines.append("Documented together with %s." % ", ".join("\\fB%s\\fR()" % esc(n) for n in others))
            lines.append(".PP")
        lines += body_to_roff(body) or ["See the reference page."]
        lines += [".SH SEE ALSO", ",\n".join(".BR %s (3)" % esc(n) for n in siblings[:40])
                  + (",\n" if siblings else "") + ".BR mproc (7)",
                  ".PP", "The reference page \\fBdocs/reference/%s\\fR of the mproc sources." % page]
        write(os.path.join(out, "man3", name + ".3"), lines)
    # The overview, from the README.
    readme = sections(os.path.join(src, "README.md"))
    intro = open(os.path.join(src, "README.md"), encoding="utf-8").read().split("\n## ")[0].split("\n")[1:]
    lines = th("mproc", 7, ver, "mproc Overview")
    lines += [".SH NAME", "mproc \\- processes, process pools, futures, queues, pipes, shared memory "
              "and process\\-shared synchronization for C programs on Linux"]
    lines += [".SH SYNOPSIS", ".nf", ".B #include <mproc.h>", ".fi", ".PP",
              "\\fBcc\\fR prog.c $(\\fBpkg\\-config \\-\\-cflags \\-\\-libs mproc\\fR)",
              ".SH DESCRIPTION"] + body_to_roff(intro)
    for lvl, heading, body in readme:
        if lvl == 2 and heading.strip() in ("Conventions",):
            lines += [".SH " + esc(heading.upper())] + body_to_roff(body)
    lines.append(".SH CONCEPTS")
    for title, page, funcs in concepts:
        if not funcs:
            continue
        lines += [".SS " + inline(title), ",\n".join(".BR %s (3)" % esc(n) for n in funcs)]
    lines += [".SH SEE ALSO", "The guide from Python (\\fBdocs/guide.md\\fR) and the reference pages "
              "(\\fBdocs/reference/\\fR) of the mproc sources."]
    write(os.path.join(out, "man7", "mproc.7"), lines)
    print("gen-man.py: %d section-3 pages and mproc(7) in %s" % (len(decls), out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

"""The book's markdown (MyST roles and directives, kramdown math) rewritten for Jupyter.

A page's source speaks MyST with kramdown's math: ``$$...$$`` inside a paragraph is inline math,
and roles such as ``{eq}`2.1``` or ``{cite:t}`key``` are resolved by Sphinx. Jupyter renders
CommonMark with ``$...$`` inline and ``$$...$$`` display math and knows no roles. The functions
here do the rewriting on text alone; what a role or a directive becomes is asked of a callback
(``notebooks_download`` answers from the built book), so they can be tested on small inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# {name}`content`, as MyST writes a role (the name may hold a domain: {cite:t})
ROLE = re.compile(r"\{([a-z][a-z0-9_-]*(?::[a-z][a-z0-9_-]*)*)\}`([^`]*)`")
# ```{name} argument (or :::{name}) ... closed by the same fence: a MyST directive
DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z][a-z0-9_:-]*)\}[ \t]*(?P<argument>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
FENCED_CODE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
DOUBLE_DOLLAR = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
# a display equation: a paragraph that is one $$...$$, optionally with a MyST label (name)
DISPLAY = re.compile(r"\s*\$\$(?P<tex>(?:(?!\$\$).)+)\$\$(?:[ \t]*\([^()\n]+\))?\s*", re.DOTALL)

RoleResolver = Callable[[str, str], str]  # (role name, content) -> markdown
DirectiveResolver = Callable[[str, str, str], str]  # (name, argument, body) -> markdown


def outside_code(text: str, rewrite: Callable[[str], str]) -> str:
    """``rewrite`` applied to ``text`` except inside fenced code blocks, kept as they are."""
    pieces, start = [], 0
    for block in FENCED_CODE.finditer(text):
        pieces += [rewrite(text[start : block.start()]), block.group(0)]
        start = block.end()
    return "".join([*pieces, rewrite(text[start:])])


def jupyter_math(text: str) -> str:
    """kramdown's math in Jupyter's dialect.

    A paragraph (text between blank lines) that is one ``$$...$$`` stays display math; any other
    ``$$...$$`` is inline math and becomes ``$...$``, on one line (Jupyter's inline math does
    not break across lines in every renderer).
    """

    def paragraph(par: str) -> str:
        display = DISPLAY.fullmatch(par)
        if display:
            return f"$${display.group('tex')}$$"
        return DOUBLE_DOLLAR.sub(lambda m: "$" + " ".join(m.group(1).split()) + "$", par)

    def paragraphs(chunk: str) -> str:
        return "".join(
            part if not part.strip() else paragraph(part)
            for part in re.split(r"(\n[ \t]*\n)", chunk)
        )

    return outside_code(text, paragraphs)


def resolve_roles(text: str, role: RoleResolver) -> str:
    """Every MyST role in ``text`` (outside code) replaced by what ``role`` makes of it."""
    return outside_code(text, lambda chunk: ROLE.sub(lambda m: role(m.group(1), m.group(2)), chunk))


def to_jupyter(text: str, role: RoleResolver, directive: DirectiveResolver) -> str:
    """A markdown cell of the book as Jupyter reads it.

    A directive block becomes what ``directive`` returns, in Jupyter's dialect already (it
    rewrites its own body); the text around it gets its roles resolved and its math rewritten.
    """
    pieces, start = [], 0
    for block in DIRECTIVE.finditer(text):
        pieces.append(jupyter_math(resolve_roles(text[start : block.start()], role)))
        name, argument, body = block.group("name", "argument", "body")
        pieces.append(directive(name, argument.strip(), body))
        start = block.end()
    return "".join([*pieces, jupyter_math(resolve_roles(text[start:], role))])


def myst_left_in(text: str) -> list[str]:
    """What Jupyter would show raw: MyST roles, directives and inline ``$$`` math in ``text``.

    Code is left out (fenced blocks, and ``code spans`` for math): it is shown as written.
    """
    outside_fences = FENCED_CODE.sub("", text)
    left = [m.group(0) for m in ROLE.finditer(outside_fences)]
    left += [m.group(0) for m in DIRECTIVE.finditer(text)]
    prose = re.sub(r"`[^`\n]*`", "", outside_fences)
    for par in re.split(r"\n[ \t]*\n", prose):
        if "$$" in par and not DISPLAY.fullmatch(par):
            left.append(par.strip())
    return left

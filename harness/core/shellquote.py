"""Where a ``#{name}`` placeholder sits in shell text (unquoted, "...", '...', or a place
no value can be quoted for), and how to quote a value there so it stays one literal word.
Pure; used by ``harness.core.atomic`` when an atomic is loaded and rendered."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache

_PLACEHOLDER = re.compile(r"#\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Slot:
    """One ``#{name}`` in shell text (``text[start:end]``) and the quoting it sits in:
    ``plain`` (unquoted), ``double`` ("..."), ``single`` ('...'), or one shadowtest cannot
    quote for: ``backtick``, ``heredoc``, ``comment``, ``ansi`` ($'...')."""

    start: int
    end: int
    name: str
    context: str


#: contexts a value cannot be quoted for, and how to rewrite the atomic
UNQUOTABLE = {
    "backtick": ("a `...` command substitution", "use $(...) instead of backticks"),
    "heredoc": ("a here-document", 'set a variable before it (v=#{NAME}) and use "$v" in it'),
    "comment": ("a shell comment", "remove it from the comment"),
    "ansi": ("a $'...' string", "use '...' or \"...\" instead"),
    "escaped": ("a word right after \\ or $", "remove the \\ or $ before it"),
    "unknown": ("a place the quoting scanner cannot read (a here-document's delimiter?)",
                "move it into a plain word or a quoted string"),
}
_WORD_BREAK = frozenset(" \t\n;&|()<>")
_CLOSE = {"double": '"', "ansi": "'", "backtick": "`"}


@lru_cache(maxsize=1024)
def placeholders(text: str) -> tuple[Slot, ...]:  # noqa: PLR0912, PLR0915 - a state machine
    """Every ``#{name}`` in POSIX sh / bash ``text`` with its quoting context: a small
    scanner of quotes, ``$(...)``, backticks, comments and here-documents (it never judges
    the script otherwise; an unterminated quote is the shell's to report)."""
    out: list[Slot] = []
    stack = ["plain"]  # plain | subst | double | single | ansi | backtick | comment
    heredocs: list[tuple[str, bool]] = []  # pending (delimiter, strip leading tabs)
    i, word_start = 0, True
    while i < len(text):
        if m := _PLACEHOLDER.match(text, i):
            ctx = "backtick" if "backtick" in stack else stack[-1]
            ctx = "plain" if ctx == "subst" else ctx
            if ctx not in ("single", "comment") and i and text[i - 1] in "\\$":
                ctx = "escaped"  # \'v' or $'v' would change what the quotes mean
            out.append(Slot(i, m.end(), m.group(1), ctx))
            i, word_start = m.end(), False
            continue
        c, top = text[i], stack[-1]
        if top == "comment":
            if c == "\n":
                stack.pop()  # the newline itself is the plain shell's (here-documents)
            else:
                i += 1
            continue
        if top == "single":
            stack.pop() if c == "'" else None
            i += 1
            continue
        if top in _CLOSE:
            if c == "\\":
                i += 1 if _PLACEHOLDER.match(text, i + 1) else 2
            elif c == _CLOSE[top]:
                stack.pop()
                i += 1
            elif top != "ansi" and text.startswith("$(", i):
                stack.append("subst")
                i, word_start = i + 2, True
            elif top == "double" and c == "`":
                stack.append("backtick")
                i += 1
            else:
                i += 1
            continue
        # plain or inside $( )
        if c == "\n" and heredocs:
            i = _heredoc_bodies(text, i + 1, heredocs, out)
            heredocs.clear()
            word_start = True
            continue
        step, push = 1, None
        if c == "\\":
            step = 1 if _PLACEHOLDER.match(text, i + 1) else 2
        elif text.startswith("$'", i):
            step, push = 2, "ansi"
        elif c in "'\"`":
            push = {"'": "single", '"': "double", "`": "backtick"}[c]
        elif text.startswith("$(", i):
            step, push = 2, "subst"
        elif c == "(":
            push = "subst"
        elif c == ")" and top == "subst":
            stack.pop()
        elif c == "#" and word_start:
            push = "comment"
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            step = _heredoc_start(text, i, heredocs) - i
        if push:
            stack.append(push)
        word_start = c in _WORD_BREAK or push == "subst"
        i += step
    seen = {slot.start for slot in out}
    out += [Slot(m.start(), m.end(), m.group(1), "unknown")
            for m in _PLACEHOLDER.finditer(text) if m.start() not in seen]
    return tuple(sorted(out, key=lambda slot: slot.start))


def _heredoc_start(text: str, i: int, pending: list[tuple[str, bool]]) -> int:
    """Record the here-document whose ``<<`` is at ``i``; the index after its word."""
    j = i + 2
    strip = text.startswith("-", j)
    j += strip
    while j < len(text) and text[j] in " \t":
        j += 1
    k = j
    while k < len(text) and text[k] not in _WORD_BREAK:
        k += 1
    pending.append((re.sub(r"[\"'\\]", "", text[j:k]), strip))
    return k


def _heredoc_bodies(text: str, i: int, pending: list[tuple[str, bool]], out: list[Slot]) -> int:
    """Skip the bodies of the ``pending`` here-documents starting at ``i``, recording
    their placeholders; the index after the last delimiter line."""
    for delimiter, strip in pending:
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line = text[i:end]
            out += [Slot(i + m.start(), i + m.end(), m.group(1), "heredoc")
                    for m in _PLACEHOLDER.finditer(line)]
            i = end + 1
            if (line.lstrip("\t") if strip else line) == delimiter:
                break
    return i


def shell_quote(value: str, context: str) -> str:
    """``value`` as one literal word in ``context`` (see Slot)."""
    if context == "plain":
        return shlex.quote(value)
    if context == "double":
        return re.sub(r'([\\$`"])', r"\\\1", value)
    if context == "single":
        return value.replace("'", "'\\''")
    where, fix = UNQUOTABLE[context]
    raise ValueError(f"a value cannot be quoted inside {where}: {fix}")

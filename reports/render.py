"""Jinja2 environments and value formatting shared by every HTML and LaTeX output.

One place decides how a number, a missing value or a special character is written, so the
leaderboard, the paper tables and the site agree digit for digit.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import jinja2

from ebyd_bench.benchmark.io import atomic_write_text

from .tables import is_ebyd, is_number

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%", "&": r"\&",
    "#": r"\#", "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "×": r"$\times$", "±": r"$\pm$",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL) + "|[\u0391-\u03c9]")
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def _greek(char: str) -> str:
    """Greek letter -> math command (pdflatex's default fonts lack Greek text glyphs, e.g. "eps=8/255")."""
    match = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (\w+)", unicodedata.name(char, ""))
    if not match:
        return char
    word = match.group(2).lower().replace("lamda", "lambda")
    word = word if match.group(1) == "SMALL" else word.capitalize()
    return char if word == "omicron" or (word[0].isupper() and word not in _GREEK_CAPITALS) else f"$\\{word}$"


def tex_escape(value: Any) -> str:
    """Escape LaTeX special characters in one pass (so inserted backslashes are not re-escaped)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL.get(m.group(0)) or _greek(m.group(0)), str(value))


def fmt(value: Any, missing: str, signed: bool = False, digits: int = 2) -> str:
    """Fixed-decimal number, or `missing` for None/NaN ("-0.00" is printed as "0.00")."""
    if not is_number(value):
        return missing
    if math.isinf(value):
        return ("-" if value < 0 else "+" if signed else "") + "inf"
    value = round(float(value), digits) + 0.0
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _tex_signed(value: Any) -> str:
    """TeX signed deviation in math mode, so the minus sign is a real minus."""
    text = fmt(value, "--", signed=True)
    return text if text == "--" else f"${text}$"


def md_escape(value: Any) -> str:
    """One Markdown table cell: pipes escaped, line breaks flattened."""
    return " ".join(str(value).split()).replace("|", "\\|")


def environment(tex: bool, markdown: bool = False) -> jinja2.Environment:
    """HTML env (autoescaped), TeX env (\\BLOCK{}/\\VAR{} delimiters, `tex` escape filter) or
    Markdown env (`md` escape filter, no autoescape)."""
    options: dict[str, Any] = dict(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    if tex:
        options.update(block_start_string=r"\BLOCK{", block_end_string="}",
                       variable_start_string=r"\VAR{", variable_end_string="}",
                       comment_start_string=r"\#{", comment_end_string="}", autoescape=False)
    else:
        options.update(autoescape=not markdown)
    env = jinja2.Environment(**options)
    missing = "--" if tex else "\u2013"
    env.filters.update(num=lambda v, d=2: fmt(v, missing, digits=d),
                       signed=_tex_signed if tex else (lambda v, d=2: fmt(v, missing, signed=True, digits=d)),
                       tex=tex_escape, md=md_escape)
    env.tests["ebyd"] = is_ebyd
    return env


def render_file(path: Path, template: str, context: dict[str, Any]) -> Path:
    """Render `template` (TeX delimiters for *.tex.j2, no HTML escaping for *.md.j2) atomically into `path`."""
    env = environment(tex=template.endswith(".tex.j2"), markdown=template.endswith(".md.j2"))
    text = env.get_template(template).render(**context)
    atomic_write_text(path, text)
    return path


def slug(*parts: Any) -> str:
    """File-name-safe lower-case slug of the parts, joined by "-"."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"

"""Placeholders in analysis queries and URLs: `{{version}}`, `{{model}}`, `{{namespace}}`,
`{{name}}`, `{{variant}}`.

Pure. A template is checked when the spec is read (an unknown placeholder is a spec error,
refused at `kubectl apply` by the CRD's rule built from TEMPLATE_PATTERN), and filled in when
a measurement is taken, each value escaped for where it lands: percent-encoded in a URL, and
escaped for a quoted PromQL string in a query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

PLACEHOLDERS = ("version", "model", "namespace", "name", "variant")

# `{{ name }}`: spaces inside the braces are allowed, nothing else.
_PLACEHOLDER = r"\{\{ *(" + "|".join(PLACEHOLDERS) + r") *\}\}"
# A template whose every `{{` starts a known placeholder: a single `{` (PromQL's label
# matchers) is text. Both Python's re and RE2 (CEL's matches() in the API server) read it alike.
TEMPLATE_PATTERN = r"^([^{]|\{[^{]|\{$|" + _PLACEHOLDER + r")*$"
_TEMPLATE = re.compile(TEMPLATE_PATTERN)
_KNOWN = re.compile(_PLACEHOLDER)
_ANY = re.compile(r"\{\{([^{}]*)\}\}")
TEMPLATE_MESSAGE = "unknown placeholder; the known ones are " + ", ".join(
    "{{" + p + "}}" for p in PLACEHOLDERS
)


@dataclass(frozen=True)
class TemplateContext:
    """The values placeholders stand for, for one side of one rollout."""

    version: str  # the model version measured, e.g. "4"
    model: str  # the registered model's name
    namespace: str  # the ModelDeployment's namespace
    name: str  # the ModelDeployment's name
    variant: str  # the side measured: canary, main or challenger

    def value(self, placeholder: str) -> str:
        value: str = getattr(self, placeholder)
        return value


def check_template(text: str) -> str:
    """`text` when every `{{...}}` in it is a known placeholder; else ValueError naming the
    first unknown one."""
    if _TEMPLATE.fullmatch(text):
        return text
    for match in _ANY.finditer(text):
        if not _KNOWN.fullmatch(match.group(0)):
            raise ValueError(f"{match.group(0)}: {TEMPLATE_MESSAGE}")
    raise ValueError(f"'{{{{' that starts no placeholder: {TEMPLATE_MESSAGE}")


def placeholders(text: str) -> list[str]:
    """The placeholders `text` uses, in order."""
    return [match.group(1) for match in _KNOWN.finditer(text)]


def _fill(text: str, context: TemplateContext, escape: Callable[[str], str]) -> str:
    check_template(text)
    return _KNOWN.sub(lambda match: escape(context.value(match.group(1))), text)


def url_escape(value: str) -> str:
    """`value` percent-encoded so that it stays one path segment or query value."""
    return quote(value, safe="")


# PromQL strings take Go's escapes; `\x..` is valid inside "..." and '...' alike, so quotes are
# written that way and a value cannot end the string it was put in.
_PROMQL_ESCAPES = {"\\": "\\\\", '"': "\\x22", "'": "\\x27", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def promql_escape(value: str) -> str:
    """`value` escaped for a PromQL string literal in double or single quotes (the label
    matchers' `{version="{{version}}"}`); not for backquoted raw strings, which escape nothing."""
    out = []
    for char in value:
        if char in _PROMQL_ESCAPES:
            out.append(_PROMQL_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def render_url(template: str, context: TemplateContext) -> str:
    """A URL template filled in, each value percent-encoded."""
    return _fill(template, context, url_escape)


def render_query(template: str, context: TemplateContext) -> str:
    """A PromQL query template filled in, each value escaped for a quoted string."""
    return _fill(template, context, promql_escape)

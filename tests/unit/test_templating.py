import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliasop.templating import (
    PLACEHOLDERS,
    TemplateContext,
    check_template,
    placeholders,
    promql_escape,
    render_query,
    render_url,
)

CONTEXT = TemplateContext(
    version="4", model="cat.bikes", namespace="ml", name="bikes", variant="canary"
)


@pytest.mark.parametrize(
    ("template", "used"),
    [
        ("sum(rate(errors_total[1m]))", []),
        ('sum(rate(errors_total{version="{{version}}"}[1m]))', ["version"]),
        (
            "{{model}}{{ namespace }}{{name  }}{{variant}}",
            ["model", "namespace", "name", "variant"],
        ),
        ("a{b}c{", []),  # single braces are PromQL's, and text
        ("http://scorer/score?model={{model}}&version={{version}}", ["model", "version"]),
        ("}}{{version}}}}", ["version"]),
    ],
)
def test_known_placeholders_are_accepted(template: str, used: list[str]) -> None:
    assert check_template(template) == template
    assert placeholders(template) == used


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{versoin}}", "{{versoin}}"),
        ('x{job="{{args.job}}"}', "{{args.job}}"),
        ("{{Version}}", "{{Version}}"),
        ("{{}}", "{{}}"),
        ("{{version}} and {{pod}}", "{{pod}}"),
        ("{{ version", "starts no placeholder"),
        ("{{{version}}}", "starts no placeholder"),
        ("{{version}", "starts no placeholder"),
        ("trailing {{", "starts no placeholder"),
    ],
)
def test_unknown_placeholders_are_refused_naming_them(template: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)) as refused:
        check_template(template)
    assert "{{version}}, {{model}}" in str(refused.value)
    with pytest.raises(ValueError):
        render_query(template, CONTEXT)


def test_urls_get_their_values_percent_encoded() -> None:
    context = TemplateContext(
        version="4", model="a b&c=d/e?#", namespace="ml", name="bikes", variant="main"
    )
    url = render_url("http://scorer/score?model={{model}}&v={{ version }}", context)
    assert url == "http://scorer/score?model=a%20b%26c%3Dd%2Fe%3F%23&v=4"


def test_queries_get_their_values_escaped_for_a_quoted_string() -> None:
    context = TemplateContext(
        version='4"} or vector(1) #', model="it's", namespace="ml", name="a\\b", variant="x\ny"
    )
    query = render_query(
        'errors{version="{{version}}",model=\'{{model}}\',name="{{name}}",v="{{variant}}"}',
        context,
    )
    assert query == (
        'errors{version="4\\x22} or vector(1) #",model=\'it\\x27s\',name="a\\\\b",v="x\\ny"}'
    )


def _go_unquote_body(text: str) -> str:
    """What PromQL's lexer makes of the inside of a quoted string (the escapes promql_escape
    writes)."""
    simple = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}

    def one(match: re.Match[str]) -> str:
        escape = match.group(1)
        return chr(int(escape[1:], 16)) if escape[0] == "x" else simple[escape]

    return re.sub(r"\\(x[0-9a-f]{2}|[\\nrt])", one, text)


@given(st.text())
def test_an_escaped_value_cannot_leave_its_string_and_reads_back_as_itself(value: str) -> None:
    escaped = promql_escape(value)
    assert '"' not in escaped and "'" not in escaped and "\n" not in escaped
    assert not re.search(r"(?<!\\)(\\\\)*\\$", escaped)  # no dangling backslash
    assert _go_unquote_body(escaped) == value


@given(st.text())
def test_a_url_value_stays_one_component(value: str) -> None:
    url = render_url(
        "http://s/p/{{name}}?q={{name}}",
        TemplateContext(version="1", model="m", namespace="n", name=value, variant="v"),
    )
    path, _, query = url.removeprefix("http://s/p/").partition("?q=")
    assert "/" not in path and "&" not in query and "#" not in url
    assert unquote(path) == value == unquote(query)


@given(st.lists(st.sampled_from(["{", "}", "a", " ", "version", "pod", "{{", "}}"])).map("".join))
def test_check_template_never_crashes(text: str) -> None:
    try:
        check_template(text)
    except ValueError:
        return
    # Accepted: filling it in leaves no `{{` that was a placeholder.
    for name in PLACEHOLDERS:
        assert "{{" + name + "}}" not in render_query(text, CONTEXT)

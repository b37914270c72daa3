"""MkDocs hook: the REST routes and their shapes, from the server's own OpenAPI schema.

Where rest-api.md holds ``<!-- openapi -->``, the page gets every route of
``create_app(...).openapi()`` (what the server serves at ``/openapi.json``):
its parameters, body, answers, and the shapes of what it returns.

Example
-------
>>> "### `GET /health`" in reference()        # doctest: +SKIP
True
"""

from __future__ import annotations

import re

MARKER = "<!-- openapi -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Put the routes where the page has the marker."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown


def reference() -> str:
    """Markdown: a section per route, then one per schema."""
    from sense.local.app import create_app

    # Only the schema is read: no project is served, no credentials are checked.
    schema = create_app(None, None, hosts=frozenset()).openapi()
    sections = ["## Routes"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            sections.append(_operation(method.upper(), path, operation))
    sections.append("## Shapes")
    for name, shape in schema["components"]["schemas"].items():
        sections.append(_shape(name, shape))
    return "\n\n".join(sections)


def _operation(method: str, path: str, operation: dict) -> str:
    lines = [f"### `{method} {path}`", "", _text(operation.get("description", ""))]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["", "| parameter | in | type | required |", "|---|---|---|---|"]
        lines += [
            f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
            f"{'yes' if p.get('required') else 'no'} |"
            for p in parameters
        ]
    body = operation.get("requestBody")
    if body:
        kinds = ", ".join(f"`{kind}`" for kind in body.get("content", {}))
        lines += ["", f"Body: {kinds}."]
    answers = ", ".join(
        f"{status} {_type(_content_schema(answer)) or answer.get('description', '')}".strip()
        for status, answer in operation.get("responses", {}).items()
    )
    lines += ["", f"Answers: {answers}."]
    return "\n".join(lines)


def _shape(name: str, shape: dict) -> str:
    lines = [f"### {name}", ""]
    if "enum" in shape:
        return "\n".join([*lines, "One of " + ", ".join(f"`{v}`" for v in shape["enum"]) + "."])
    lines += ["| field | type |", "|---|---|"]
    lines += [f"| `{field}` | {_type(kind)} |" for field, kind in shape["properties"].items()]
    return "\n".join(lines)


def _content_schema(answer: dict) -> dict:
    for content in answer.get("content", {}).values():
        return content.get("schema", {})
    return {}


def _type(schema: dict) -> str:
    """A schema in a few words: ``integer``, ``Dashboard``, ``string or null``, ..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    return schema.get("type", "")


def _text(docstring: str) -> str:
    """A route's docstring as Markdown: reST's double backquotes become single ones."""
    return re.sub(r"``(.+?)``", r"`\1`", docstring)

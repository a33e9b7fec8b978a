"""JSON Schema validation of lined YAML documents: errors name file, line and key path."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from harness.core.errors import ScenarioError
from harness.core.yamlfile import KeyPath, LinedDocument

_DURATION = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m)$")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads(files("harness").joinpath(f"schemas/{name}.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(doc: LinedDocument, schema: str) -> list[ScenarioError]:
    """All schema errors of ``doc``, first by line, each with file:line:key."""
    if not isinstance(doc.data, dict):
        return [doc.error((), f"expected a mapping at the top of the {schema} file, got {_kind(doc.data)}")]
    errors = [_explain(doc, e) for e in validator(schema).iter_errors(doc.data)]
    return sorted(errors, key=lambda e: (e.line or 0, e.key))


def _explain(doc: LinedDocument, err: ValidationError) -> ScenarioError:
    path: KeyPath = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        if extra:
            key = (*path, extra[0])
            return doc.error(key, f"unknown key {extra[0]!r}: expected one of {', '.join(allowed)}")
    if err.validator == "required":
        return doc.error(path, f"{err.message}; add it")
    if err.schema is False:  # the only false schemas: expect.<sensor> with 'gap' and more keys
        return doc.error(path, "'gap' declares a known gap and excludes technique, rule, "
                               "severity and fields: keep either the gap or the expectation")
    if err.validator == "oneOf":
        return doc.error(
            path, f"expected a scalar (exact match) or a one-key mapping "
                  f"{{prefix|contains|regex: ...}}, got {err.instance!r}"
        )
    hint = ""
    if err.validator == "type" and isinstance(err.instance, bool) \
            and "boolean" not in str(err.validator_value):
        hint = " (YAML reads yes/no/true/false/on/off as a boolean: quote it)"
    return doc.error(path, f"expected {_expected(err)}, got {err.instance!r}{hint}")


def _expected(err: ValidationError) -> str:
    v, s = err.validator, err.validator_value
    if v == "enum":
        return "one of " + ", ".join(repr(x) for x in s) if isinstance(s, list) else str(s)
    if v == "type":
        return f"type {s}"
    if v == "pattern":
        return f"a value matching {s}"
    if v == "minItems":
        return f"at least {s} item(s)"
    return f"{v} {s!r}"


def _kind(value: Any) -> str:
    return "an empty file" if value is None else type(value).__name__


def parse_duration(text: str) -> float:
    """``"500ms"``/``"5s"``/``"1m"`` to seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 500ms, 5s or 1m, got {text!r}")
    n = float(m["n"])
    return {"ms": n / 1000.0, "s": n, "m": n * 60.0}[m["unit"]]

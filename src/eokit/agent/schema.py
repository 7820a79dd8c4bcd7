"""Find capability tools by name and turn their typed signatures into JSON schemas."""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jsonschema

from eokit.core.errors import InputError
from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec, Unit

log = logging.getLogger(__name__)

#: Entry-point group under which a package registers a module with a ``TOOLS`` list.
ENTRY_POINT_GROUP = "eokit.tools"


def tool_modules() -> tuple[str, ...]:
    """Modules registered under :data:`ENTRY_POINT_GROUP` (eokit's capabilities or a plug-in)."""
    from importlib.metadata import entry_points

    return tuple(ep.value for ep in sorted(entry_points(group=ENTRY_POINT_GROUP),
                                           key=lambda ep: ep.name))


def discover_tools(modules: tuple[str, ...] | None = None) -> list[ToolSpec]:
    """Import every available tools module and collect its ``TOOLS``.

    Args:
        modules: Dotted module names to try (default: :func:`tool_modules`); a module whose
            optional dependency is missing is skipped.

    Returns:
        The tool specs, names unique.
    """
    found: dict[str, ToolSpec] = {}
    for name in tool_modules() if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        for spec in getattr(module, "TOOLS", []):
            if spec.name in found:
                raise ValueError(f"tool name {spec.name!r} defined twice ({name})")
            found[spec.name] = spec
    return list(found.values())


def _arg_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from the ``Args:`` section of a Google docstring."""
    out: dict[str, str] = {}
    section = False
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        if re.match(r"^(Args|Arguments):\s*$", line):
            section = True
            continue
        if section and re.match(r"^\S.*:\s*$", line):
            break
        if not section:
            continue
        m = re.match(r"^\s{2,8}(\w+)(?: \(.*\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema for one annotated Python type."""
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        schema = _type_schema(base)
        for m in meta:
            if isinstance(m, InputPath | OutputPath):
                schema["type"] = "string"
                schema["format"] = f"{'input' if isinstance(m, InputPath) else 'output'}-{m.kind}"
            elif isinstance(m, Range):
                if m.minimum is not None:
                    key = "exclusiveMinimum" if m.exclusive_minimum else "minimum"
                    schema[key] = m.minimum
                if m.maximum is not None:
                    key = "exclusiveMaximum" if m.exclusive_maximum else "maximum"
                    schema[key] = m.maximum
            elif isinstance(m, Unit):
                schema["x-unit"] = m.symbol
        return schema
    origin = get_origin(tp)
    if origin is Literal:
        values = list(get_args(tp))
        return {"enum": values}
    if origin in (Union, types.UnionType):
        parts = [_type_schema(a) for a in get_args(tp)]
        return {"anyOf": parts}
    if origin in (list, tuple) or tp in (list, tuple):
        args = get_args(tp)
        arr: dict[str, Any] = {"type": "array"}
        if args and origin is list:
            arr["items"] = _type_schema(args[0])
        elif args and origin is tuple and args[-1] is not Ellipsis:
            arr["prefixItems"] = [_type_schema(a) for a in args]
            arr["minItems"] = arr["maxItems"] = len(args)
        elif args:
            arr["items"] = _type_schema(args[0])
        return arr
    if origin is dict or tp is dict:
        return {"type": "object"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON schema for parameter type {tp!r}")


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """The JSON schema (Draft 2020-12) of a tool's arguments, from its signature and docstring.

    Args:
        spec: The tool.

    Returns:
        An object schema with one property per parameter.
    """
    hints = typing.get_type_hints(spec.function, include_extras=True)
    docs = _arg_docs(spec.function.__doc__ or "")
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(spec.function).parameters.items():
        if name not in hints:
            raise TypeError(f"{spec.name}: parameter {name!r} has no type annotation")
        prop = _type_schema(hints[name])
        desc = docs.get(name, "")
        unit = prop.pop("x-unit", None)
        if unit:
            desc = f"{desc} Unit: {unit}.".strip()
        if desc:
            prop["description"] = desc
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            prop["default"] = param.default
        props[name] = prop
    if spec.effect != "read":
        props.setdefault(
            "overwrite",
            {"type": "boolean", "default": False, "description": "Replace existing outputs."},
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def validate_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> None:
    """Check call arguments against the tool's schema.

    Args:
        spec: The tool.
        arguments: The arguments the client sent.

    Raises:
        InputError: One line naming the parameter and the problem.
    """
    validator = jsonschema.Draft202012Validator(tool_schema(spec))
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path) or "arguments"
        raise InputError(f"{spec.name}: {where}: {err.message}")

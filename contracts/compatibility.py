"""Breaking changes between two JSON Schemas of the same message type and major version.

Pure functions over the dicts of `contracts.schema_export` (or `msgspec.json.schema`).
Following DESIGN §4 (msgspec's evolution rules), within one major version:

- a removed property is breaking (older readers still expect it);
- a property whose type changed is breaking (a nullable field that becomes non-null,
  or the reverse, counts as a change; so does a struct that becomes a list, ...);
- a new property without a default (listed in `required`) is breaking, and so is an
  existing property that loses its default;
- a value removed from an enum (a `Literal`) is breaking; a value added is not;
- a struct that starts forbidding unknown fields is breaking;
- a new optional property (with a default) is not breaking.

Nested structs are compared through their `$ref`s (resolved in each schema's own `$defs`
or any other JSON pointer into the document), recursively, so a change deep inside the
workload spec is reported with its path: ``spec.requirements.min_seal``.
"""

from __future__ import annotations

import json
from typing import Any

_Schema = dict[str, Any]


class _Doc:
    """One schema document, able to resolve local `$ref`s."""

    def __init__(self, root: _Schema) -> None:
        self.root = root

    def resolve(self, node: Any) -> Any:
        seen: set[str] = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen or not ref.startswith("#"):
                return node
            seen.add(ref)
            target = self._pointer(ref[1:])
            if target is None:
                return node
            node = target
        return node

    def _pointer(self, pointer: str) -> Any:
        node: Any = self.root
        if not pointer:
            return node
        for raw in pointer.lstrip("/").split("/"):
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node


def _variants(doc: _Doc, node: Any) -> list[Any]:
    """The alternatives of a node: the branches of anyOf/oneOf, flattened and resolved."""
    node = doc.resolve(node)
    if isinstance(node, dict):
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                out: list[Any] = []
                for branch in node[key]:
                    out.extend(_variants(doc, branch))
                return out
    return [node]


def _kinds(variant: Any) -> list[str]:
    """What a variant accepts, as kind words: string, integer, struct, map, enum, ..."""
    if variant is True or variant == {}:
        return ["any"]
    if not isinstance(variant, dict):
        return ["none"]
    if "enum" in variant or "const" in variant:
        return ["enum"]
    types = variant.get("type")
    if types is None:
        return ["struct"] if "properties" in variant else ["any"]
    out = []
    for t in types if isinstance(types, list) else [types]:
        if t == "object":
            if "properties" in variant:
                out.append("struct")
            elif isinstance(variant.get("additionalProperties"), dict):
                out.append("map")
            else:
                out.append("object")
        elif t == "string" and "format" in variant:
            out.append(f"string({variant['format']})")
        else:
            out.append(str(t))
    return out


def _enum_values(variant: dict[str, Any]) -> list[Any]:
    return list(variant["enum"]) if "enum" in variant else [variant.get("const")]


def _label(kinds: set[str]) -> str:
    return " | ".join(sorted(kinds)) or "nothing"


def _show(path: str) -> str:
    return path or "(the message itself)"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class _Comparer:
    def __init__(self, name: str, old: _Doc, new: _Doc) -> None:
        self.name = name
        self.old = old
        self.new = new
        self.found: list[str] = []
        # The struct pairs being compared right now, so a recursive struct ends.
        self._active: set[tuple[int, int]] = set()

    def report(self, sentence: str) -> None:
        self.found.append(f"{self.name}: {sentence}")

    def node(self, old: Any, new: Any, path: str) -> None:
        old_vs, new_vs = _variants(self.old, old), _variants(self.new, new)
        old_by_kind = _by_kind(old_vs)
        new_by_kind = _by_kind(new_vs)
        if set(old_by_kind) != set(new_by_kind):
            self.report(
                f"the type of '{_show(path)}' changed from {_label(set(old_by_kind))} "
                f"to {_label(set(new_by_kind))}"
            )
            return
        for kind, olds in old_by_kind.items():
            news = new_by_kind[kind]
            if kind == "enum":
                kept = {_json(v) for n in news for v in _enum_values(n)}
                gone = [v for o in olds for v in _enum_values(o) if _json(v) not in kept]
                if gone:
                    values = ", ".join(_json(v) for v in gone)
                    self.report(f"'{_show(path)}' no longer accepts {values}")
            elif kind == "array":
                self.node(olds[0].get("items", {}), news[0].get("items", {}), f"{path}[]")
            elif kind == "map":
                self.node(
                    olds[0].get("additionalProperties", {}),
                    news[0].get("additionalProperties", {}),
                    f"{path}{{}}",
                )
            elif kind == "struct":
                self._structs(olds, news, path)

    def _structs(self, olds: list[dict[str, Any]], news: list[dict[str, Any]], path: str) -> None:
        if len(olds) == 1 and len(news) == 1:
            self.struct(olds[0], news[0], path)
            return
        new_by_title = {n.get("title"): n for n in news}
        for old in olds:
            match = new_by_title.get(old.get("title"))
            if match is None:
                self.report(f"'{_show(path)}' no longer accepts the struct {old.get('title')}")
            else:
                self.struct(old, match, path)

    def struct(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        key = (id(old), id(new))
        if key in self._active:
            return  # a recursive struct, already being compared further up
        self._active.add(key)
        try:
            self._fields(old, new, path)
        finally:
            self._active.discard(key)

    def _fields(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required = set(old.get("required", []))
        new_required = set(new.get("required", []))
        prefix = f"{path}." if path else ""
        for field, old_field in old_props.items():
            field_path = prefix + field
            if field not in new_props:
                self.report(f"property '{field_path}' was removed")
                continue
            if field in new_required and field not in old_required:
                self.report(f"property '{field_path}' became required (it lost its default)")
            self.node(old_field, new_props[field], field_path)
        for field in new_props:
            if field not in old_props and field in new_required:
                self.report(f"new property '{prefix + field}' is required (it has no default)")
        forbids = new.get("additionalProperties") is False
        if forbids and old.get("additionalProperties") is not False:
            self.report(f"'{_show(path)}' now refuses unknown fields")


def _by_kind(variants: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for variant in variants:
        for kind in _kinds(variant):
            out.setdefault(kind, []).append(variant)
    return out


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human sentences, one per breaking change from `old` to `new`; empty when compatible.

    Both are JSON Schemas of the same type and major version. Each sentence starts with
    the type's name (the schema's title) and names the field by its path. A recursive
    struct is compared once, at its first (shallowest) path.
    """
    old_doc, new_doc = _Doc(old), _Doc(new)
    root = old_doc.resolve(old)
    title = old.get("title") or (root.get("title") if isinstance(root, dict) else None)
    comparer = _Comparer(str(title or "schema"), old_doc, new_doc)
    comparer.node(old, new, "")
    return comparer.found

"""The committed JSON Schemas and AsyncAPI document, schema evolution, subjects (DESIGN §4)."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

import contracts
from contracts.base import PUBLISHER_TOKEN, Event, publisher_of, target_of
from contracts.catalog import FED_SUBJECTS, HEALTH_SUBJECTS, MESSAGE_TYPES
from contracts.compatibility import breaking_changes
from contracts.schema_export import (
    DOCUMENTS,
    SCHEMA_BASE_URL,
    asyncapi_document,
    json_schemas,
    stream_of,
    subject_covers,
    subject_template,
)
from mesh.cli.contracts_cmd import rendered_asyncapi, rendered_schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = ROOT / "contracts" / "schemas"
ASYNCAPI_FILE = ROOT / "docs" / "asyncapi.yaml"
STALE = "stale committed copy; run `make schemas` and commit the result"

# --- a sample of every type, built from its msgspec type info -------------------------

# Candidate strings for constrained ids; the first one that matches a pattern is used.
_STRINGS = ("member-a", "NL", "EU", "x1")
_WHEN = dt.datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=dt.UTC)


def _sample_value(t: mi.Type, name: str) -> Any:
    if isinstance(t, mi.StructType):
        return _sample_struct(t)
    if isinstance(t, mi.UnionType):
        # Prefer a non-null branch, so the sample covers the field's real content.
        branches = [b for b in t.types if not isinstance(b, mi.NoneType)]
        return _sample_value(branches[0], name) if branches else None
    if isinstance(t, mi.StrType):
        if t.pattern is None:
            return f"{name}-value"
        for candidate in _STRINGS:
            if re.search(t.pattern, candidate):
                return candidate
        raise AssertionError(f"no sample string for {name!r} matches {t.pattern!r}; add one")
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        value = max(t.ge if t.ge is not None else 2, t.gt + 1 if t.gt is not None else 1)
        return min(value, t.le) if t.le is not None else value
    if isinstance(t, mi.FloatType):
        return 1.5
    if isinstance(t, mi.LiteralType):
        return t.values[-1]
    if isinstance(t, mi.DateTimeType):
        return _WHEN
    if isinstance(t, mi.DateType):
        return _WHEN.date()
    if isinstance(t, mi.ListType):
        return [_sample_value(t.item_type, name)]
    if isinstance(t, mi.DictType):
        return {_sample_value(t.key_type, name): _sample_value(t.value_type, name)}
    if isinstance(t, mi.NoneType):
        return None
    raise AssertionError(f"the sample factory does not know {t!r} (field {name!r}); teach it")


def _sample_struct(t: mi.StructType) -> Any:
    return t.cls(**{f.name: _sample_value(f.type, f.name) for f in t.fields})


def sample(cls: type[Any]) -> Any:
    """An instance of `cls` with every field set (not left to its default)."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return _sample_struct(info)


# --- the committed copies -------------------------------------------------------------


def test_committed_schemas_match_todays_code() -> None:
    expected = rendered_schemas()
    committed = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), STALE
    for name, text in expected.items():
        assert committed[name] == text, f"{name}: {STALE}"


def test_committed_asyncapi_matches_todays_code() -> None:
    assert ASYNCAPI_FILE.is_file(), STALE
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == rendered_asyncapi(), STALE


def test_no_committed_schema_is_broken_without_a_major_bump() -> None:
    generated = json_schemas()
    problems: list[str] = []
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        name = path.stem
        old = json.loads(path.read_text(encoding="utf-8"))
        if name in generated:
            problems.extend(breaking_changes(old, generated[name]))
            continue
        base, _, major = name.rpartition(".v")
        newer = [n for n in generated if n.startswith(f"{base}.v") and n != name]
        if not any(int(n.rpartition(".v")[2]) > int(major) for n in newer):
            problems.append(f"{name}: removed without a new major version")
    assert not problems, (
        "today's code breaks committed schemas; keep them compatible (new fields need a "
        "default, never change a type) or publish a new major version:\n" + "\n".join(problems)
    )


def test_output_is_deterministic() -> None:
    assert rendered_schemas() == rendered_schemas()
    assert rendered_asyncapi() == rendered_asyncapi()


# --- breaking_changes ---------------------------------------------------------------


class Inner(msgspec.Struct, kw_only=True):
    level: int
    note: str = ""


class V1(msgspec.Struct, kw_only=True):
    name: str
    count: int
    inner: Inner
    items: list[Inner] = []
    mode: str | None = None


def schema_of(cls: type[Any]) -> dict[str, Any]:
    return msgspec.json.schema(cls)


def test_identical_schemas_have_no_breaking_changes() -> None:
    for schema in json_schemas().values():
        assert breaking_changes(schema, schema) == []
    assert breaking_changes(schema_of(V1), schema_of(V1)) == []


def test_removed_property_is_breaking() -> None:
    class V2(msgspec.Struct, kw_only=True):
        name: str
        inner: Inner
        items: list[Inner] = []
        mode: str | None = None

    found = breaking_changes(schema_of(V1), schema_of(V2))
    assert len(found) == 1
    assert "'count'" in found[0] and "removed" in found[0]


def test_changed_type_is_breaking() -> None:
    class V2(msgspec.Struct, kw_only=True):
        name: str
        count: str
        inner: Inner
        items: list[Inner] = []
        mode: str | None = None

    found = breaking_changes(schema_of(V1), schema_of(V2))
    assert len(found) == 1
    assert "'count'" in found[0] and "integer" in found[0] and "string" in found[0]


def test_new_required_property_is_breaking() -> None:
    class V2(msgspec.Struct, kw_only=True):
        name: str
        count: int
        inner: Inner
        items: list[Inner] = []
        mode: str | None = None
        owner: str

    found = breaking_changes(schema_of(V1), schema_of(V2))
    assert len(found) == 1
    assert "'owner'" in found[0] and "required" in found[0]


def test_new_optional_property_is_fine() -> None:
    class V2(msgspec.Struct, kw_only=True):
        name: str
        count: int
        inner: Inner
        items: list[Inner] = []
        mode: str | None = None
        owner: str = ""
        tags: list[str] = []

    assert breaking_changes(schema_of(V1), schema_of(V2)) == []


class Inner2(msgspec.Struct, kw_only=True):
    level: str
    extra: int


class V1NestedChanged(msgspec.Struct, kw_only=True):
    name: str
    count: int
    inner: Inner2
    items: list[Inner2] = []
    mode: str | None = None


def test_changes_in_nested_structs_are_found_by_path() -> None:
    found = breaking_changes(schema_of(V1), schema_of(V1NestedChanged))
    text = "\n".join(found)
    assert "'inner.level'" in text
    assert "'inner.extra'" in text
    assert "'inner.note'" in text
    assert "'items[].level'" in text
    assert all(line.startswith("V1: ") for line in found)


def test_nullability_and_defaults_count_as_changes() -> None:
    class V2(msgspec.Struct, kw_only=True):
        name: str | None
        count: int
        inner: Inner
        items: list[Inner] = []
        mode: str  # was optional (str | None = None)

    text = "\n".join(breaking_changes(schema_of(V1), schema_of(V2)))
    assert "'name'" in text
    assert "'mode' became required" in text
    assert "'mode' changed" in text


class Old(msgspec.Struct):
    state: Literal["a", "b"] = "a"


class Fewer(msgspec.Struct):
    state: Literal["a"] = "a"


class More(msgspec.Struct):
    state: Literal["a", "b", "c"] = "a"


def test_enum_value_removed_is_breaking_added_is_not() -> None:
    assert any('"b"' in line for line in breaking_changes(schema_of(Old), schema_of(Fewer)))
    assert breaking_changes(schema_of(Old), schema_of(More)) == []


def test_a_change_deep_in_a_real_message_is_named() -> None:
    old = json_schemas()["workload.placed.v1"]
    new = json.loads(json.dumps(old))
    del new["$defs"]["Requirements"]["properties"]["min_seal"]
    found = breaking_changes(old, new)
    assert found == ["workload.placed.v1: property 'spec.requirements.min_seal' was removed"]


class Node(msgspec.Struct, kw_only=True):
    name: str
    children: list[Node] = []


class Tree(msgspec.Struct, kw_only=True):
    root: Node


class TreeChanged(msgspec.Struct, kw_only=True):
    root: NodeChanged


class NodeChanged(msgspec.Struct, kw_only=True):
    name: str
    children: list[NodeChanged] = []
    weight: int


def test_recursive_structs_end() -> None:
    assert breaking_changes(schema_of(Tree), schema_of(TreeChanged)) == [
        "Tree: new property 'root.weight' is required (it has no default)",
    ]
    assert breaking_changes(schema_of(Tree), schema_of(Tree)) == []


# --- every message type ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_message_round_trips_through_json(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    message = sample(cls)
    body = msgspec.json.encode(message)
    assert msgspec.json.decode(body, type=cls) == message
    # Every field of the sample is described by the committed schema.
    assert set(json.loads(body)) <= set(json_schemas()[name]["properties"])


@pytest.mark.parametrize("cls", [cls for cls, _ in DOCUMENTS.values()])
def test_documents_round_trip_through_json(cls: type[Any]) -> None:
    document = sample(cls)
    assert msgspec.json.decode(msgspec.json.encode(document), type=cls) == document


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_subject_has_the_publisher_at_token_4(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    pattern = cls.subject_pattern()
    assert pattern.startswith("fed.v1."), pattern
    assert PUBLISHER_TOKEN == 4
    assert pattern.split(".")[PUBLISHER_TOKEN] == "*"
    message = sample(cls)
    target = message.target()
    assert (target is not None) == cls.TARGETED, "target() must agree with TARGETED"
    subject = cls.subject("member-p", target)
    assert publisher_of(subject) == "member-p"
    assert subject.split(".")[PUBLISHER_TOKEN] == "member-p"
    assert target_of(subject) == target
    assert subject_covers(pattern, subject)
    assert len(subject.split(".")) == (6 if cls.TARGETED else 5)


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_no_field_hides_an_event_method(name: str) -> None:
    # A field named like a method of Event would hide it on the class (cls.subject()).
    cls = MESSAGE_TYPES[name]
    fields = set(cls.__struct_fields__)
    methods = {k for k, v in vars(Event).items() if callable(v) or isinstance(v, classmethod)}
    assert not fields & methods, f"{name}: fields {fields & methods} hide Event methods"


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_subject_lands_in_exactly_one_stream(name: str) -> None:
    pattern = MESSAGE_TYPES[name].subject_pattern()
    covering = [f for f in FED_SUBJECTS + HEALTH_SUBJECTS if subject_covers(f, pattern)]
    assert len(covering) == 1, f"{pattern} is covered by {covering}"
    assert stream_of(pattern) in {"FED", "HEALTH"}


def test_every_event_class_is_in_the_catalog() -> None:
    for module in pkgutil.iter_modules(contracts.__path__):
        importlib.import_module(f"contracts.{module.name}")
    found: set[type[Event]] = set()
    todo: list[type[Event]] = [Event]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("contracts.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    concrete = {cls for cls in found if hasattr(cls, "DOMAIN")}
    missing = {cls.__name__ for cls in concrete if MESSAGE_TYPES.get(cls.type_name()) is not cls}
    assert not missing, f"Event classes missing from contracts.catalog.MESSAGE_TYPES: {missing}"


def test_type_names_are_versioned() -> None:
    for name, cls in MESSAGE_TYPES.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*\.v[0-9]+", name), name
        assert name == cls.type_name()
        assert cls.SUMMARY, f"{name} has no SUMMARY"


def test_json_schemas_carry_id_title_description_and_subject() -> None:
    schemas = json_schemas()
    assert set(MESSAGE_TYPES) | set(DOCUMENTS) <= set(schemas)
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"{SCHEMA_BASE_URL}{name}.json"
        assert schema["title"] == name
        assert schema["description"]
        assert schema["type"] == "object"
    for name, cls in MESSAGE_TYPES.items():
        assert schemas[name]["x-subject"] == cls.subject_pattern()
        assert schemas[name]["description"] == cls.SUMMARY
    for name in DOCUMENTS:
        assert "x-subject" not in schemas[name]


# --- the AsyncAPI document --------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for key in ref.removeprefix("#/").split("/"):
        node = node[key.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_has_one_channel_per_message_type() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "Stekker federation bus"
    assert document["servers"]["local"]["protocol"] == "nats"
    fed_channels = {k for k, v in document["channels"].items() if v["address"].startswith("fed.")}
    assert fed_channels == set(MESSAGE_TYPES)
    soc = [v for v in document["channels"].values() if v["address"].startswith("soc.")]
    assert [c["address"] for c in soc] == ["soc.v1.{severity}.{publisher}"]
    for name, cls in MESSAGE_TYPES.items():
        channel = document["channels"][name]
        assert channel["address"] == subject_template(cls)
        expected_params = {"publisher", "target"} if cls.TARGETED else {"publisher"}
        assert set(channel["parameters"]) == expected_params
        assert f"{name}.send" in document["operations"]
        assert document["operations"][f"{name}.send"]["action"] == "send"


def test_asyncapi_headers_document_the_envelope() -> None:
    headers = asyncapi_document()["components"]["schemas"]["fed.headers.v1"]
    assert set(headers["properties"]) == {
        "Nats-Msg-Id",
        "Fed-Type",
        "Fed-Member",
        "Fed-Key",
        "Fed-Time",
        "Fed-Sig",
        "traceparent",
    }
    assert "traceparent" not in headers["required"]


def test_asyncapi_references_all_resolve() -> None:
    document = asyncapi_document()
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        _resolve(document, ref)  # raises KeyError when dangling


def test_committed_asyncapi_is_valid_yaml_of_the_document() -> None:
    assert yaml.safe_load(rendered_asyncapi()) == asyncapi_document()

"""Loading human-written files: workload specs (YAML or TOML) and member profiles (TOML),
with the node's failover knobs (`[node.failover]` of the same file).

People edit these files by hand, so every error names the file, the 1-based line and
the field: ``workload.yaml:7: field requirements.min_seal: Expected `int` <= 4``.
Fields that the contracts do not know are refused (a typo must not silently fall back
to a default), with a suggestion when the name is close to a known one.

Placeholders in ``run.command`` (``{python}``, ``{data_dir}``, ``{port}``) are left as
written; the `process` driver fills them in when it starts the workload.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import msgspec.inspect as mi
import yaml
from msgspec import UNSET, UnsetType

from contracts.registry import SOV_OBJECTIVES, MemberProfile
from contracts.workload import WorkloadSpec
from mesh.errors import ConfigError

T = TypeVar("T")
Key = tuple[str | int, ...]  # a field's path: ("sites", 0, "capacity", "vcpu")

# Top-level tables of a member's config file that belong to the node, not the profile
# (NATS address, key file, driver); the profile loader leaves them to their own reader.
NON_PROFILE_TABLES = frozenset({"node"})


@dataclass
class _Parsed:
    data: Any
    lines: dict[Key, int]  # 1-based line of each mapping key / sequence item
    notes: dict[Key, str] = field(default_factory=dict)  # how a value was read (NO → false)


# -- public ------------------------------------------------------------------------------


def load_workload(path: Path) -> WorkloadSpec:
    path = Path(path)
    return _convert(path, _parse(path), WorkloadSpec)


def load_member_profile(path: Path) -> MemberProfile:
    """A member's profile from its TOML config: top-level id, name, legal_seat, ...,
    then [sov], [[certifications]], [stack] and [[sites]] with [sites.capacity]."""
    path = Path(path)
    parsed = _parse(path)
    if isinstance(parsed.data, dict):
        parsed.data = {k: v for k, v in parsed.data.items() if k not in NON_PROFILE_TABLES}
        _check_sov(path, parsed, parsed.data.get("sov"))
    profile = _convert(path, parsed, MemberProfile)
    _check_profile(path, parsed, profile)
    return profile


class FailoverKnobs(msgspec.Struct, kw_only=True, frozen=True):
    """`[node.failover]` of a member's config file: the failover knobs of its node (see
    docs/continuity.md). Each one left out falls back to its command-line default; a
    command-line flag given overrides the file. Limits as the flags'."""

    def given(self) -> dict[str, float | int]:
        """The knobs the file sets, by name."""
        return {f: v for f in self.__struct_fields__
                if not isinstance(v := getattr(self, f), UnsetType)}

    heartbeat: Annotated[float, msgspec.Meta(ge=0.05)] | UnsetType = UNSET  # s, --heartbeat
    suspicion: Annotated[float, msgspec.Meta(ge=0.1)] | UnsetType = UNSET  # s, --suspicion
    recovery_beats: Annotated[int, msgspec.Meta(ge=1)] | UnsetType = UNSET  # --recovery-beats
    recovery_steady: Annotated[float, msgspec.Meta(ge=0.0)] | UnsetType = UNSET  # s
    flap_guard: Annotated[float, msgspec.Meta(ge=0.0)] | UnsetType = UNSET  # s, 0: off
    replace_rate: Annotated[float, msgspec.Meta(ge=0.01)] | UnsetType = UNSET  # per s


class _Failover(msgspec.Struct, frozen=True):
    failover: FailoverKnobs = FailoverKnobs()


class _Node(msgspec.Struct):
    node: _Failover = _Failover()


def load_failover_knobs(path: Path) -> FailoverKnobs:
    """The `[node.failover]` table of a member's config file (TOML); empty when absent.
    Other keys of `[node]` are left to their own readers."""
    path = Path(path)
    parsed = _parse(path)
    node = parsed.data.get("node") if isinstance(parsed.data, dict) else None
    if node is None:
        return FailoverKnobs()
    if not isinstance(node, dict):
        raise _fail(path, parsed, ("node",), "a table expected")
    if "failover" not in node:
        return FailoverKnobs()
    only = _Parsed(data={"node": {"failover": node["failover"]}}, lines=parsed.lines,
                   notes=parsed.notes)
    return _convert(path, only, _Node).node.failover


# -- reading and parsing -----------------------------------------------------------------


def _parse(path: Path) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _parse_yaml(path, text)
    if suffix == ".toml":
        return _parse_toml(path, text)
    raise ConfigError(f"{path}: unknown file type {suffix or '(none)'}; use .yaml, .yml or .toml")


def _parse_yaml(path: Path, text: str) -> _Parsed:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}:1: empty file")
        parsed = _Parsed(data=None, lines={(): node.start_mark.line + 1})
        _index_yaml(path, node, (), parsed)
        parsed.data = loader.construct_document(node)
        return parsed
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


_YAML_BOOL = "tag:yaml.org,2002:bool"


def _index_yaml(path: Path, node: yaml.Node, key: Key, parsed: _Parsed) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*key, key_node.value)
            if child in parsed.lines:
                # PyYAML would silently keep the last one; a human meant only one.
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: field {_dotted(child)}: duplicate key")
            parsed.lines[child] = key_node.start_mark.line + 1
            _index_yaml(path, value_node, child, parsed)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            parsed.lines[(*key, index)] = item.start_mark.line + 1
            _index_yaml(path, item, (*key, index), parsed)
    elif node.tag == _YAML_BOOL and node.value.lower() not in ("true", "false"):
        # YAML 1.1 reads NO (Norway), yes, on, off as booleans.
        parsed.notes[key] = f'YAML reads {node.value} as a boolean; quote it: "{node.value}"'


_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)\s*$")
_TOML_PART = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_TOML_DOTTED = rf"{_TOML_PART}(?:\s*\.\s*{_TOML_PART})*"
_TOML_ARRAY_HEADER = re.compile(rf"^\[\[\s*({_TOML_DOTTED})\s*\]\]\s*(?:#.*)?$")
_TOML_TABLE_HEADER = re.compile(rf"^\[\s*({_TOML_DOTTED})\s*\]\s*(?:#.*)?$")
_TOML_KEY = re.compile(rf"^({_TOML_DOTTED})\s*=")


def _parse_toml(path: Path, text: str) -> _Parsed:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        found = _TOML_AT.search(message)
        if found and found.group(1):
            line = int(found.group(1))
        else:
            line = max(text.count("\n") + (0 if text.endswith("\n") else 1), 1)
        problem = _TOML_AT.sub("", message)
        raise ConfigError(f"{path}:{line}: invalid TOML: {problem}") from None
    return _Parsed(data=data, lines=_index_toml(text))


def _toml_parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in re.findall(_TOML_PART, dotted)]


def _index_toml(text: str) -> dict[Key, int]:
    """Line of every `key =` and table header, by scanning lines (tomllib keeps none).

    Arrays of tables count their occurrences, so `[sites.capacity]` after the second
    `[[sites]]` is ("sites", 1, "capacity"). Text inside multi-line strings is skipped.
    """
    lines: dict[Key, int] = {(): 1}
    arrays: dict[Key, int] = {}  # resolved array-of-tables path → tables seen so far
    table: Key = ()
    in_string = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        header = _TOML_ARRAY_HEADER.match(line) or _TOML_TABLE_HEADER.match(line)
        if header:
            is_array = line.startswith("[[")
            table = _resolve(_toml_parts(header.group(1)), arrays, is_array)
            _remember(lines, table, number)
            if is_array:  # the array itself, for errors about the whole list
                lines.setdefault(table[:-1], number)
        elif key := _TOML_KEY.match(line):
            _remember(lines, (*table, *_toml_parts(key.group(1))), number)
        in_string = quotes % 2 == 1
    return lines


def _resolve(parts: list[str], arrays: dict[Key, int], declares_array: bool) -> Key:
    resolved: Key = ()
    for position, part in enumerate(parts):
        resolved = (*resolved, part)
        if declares_array and position == len(parts) - 1:
            count = arrays.get(resolved, 0)
            arrays[resolved] = count + 1
            resolved = (*resolved, count)
        elif resolved in arrays:  # a sub-table of the latest table in that array
            resolved = (*resolved, arrays[resolved] - 1)
    return resolved


def _remember(lines: dict[Key, int], key: Key, number: int) -> None:
    for length in range(1, len(key) + 1):
        lines.setdefault(key[:length], number)
    lines[key] = number


# -- validation --------------------------------------------------------------------------


def _dotted(key: Key) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(parsed: _Parsed, key: Key) -> int:
    """The line of `key`, or of its closest parent that the file spells out."""
    for length in range(len(key), -1, -1):
        if key[:length] in parsed.lines:
            return parsed.lines[key[:length]]
    return 1


def _fail(path: Path, parsed: _Parsed, key: Key, message: str) -> ConfigError:
    if key in parsed.notes:
        message = f"{message} ({parsed.notes[key]})"
    where = f"{path}:{_line_of(parsed, key)}"
    if key:
        return ConfigError(f"{where}: field {_dotted(key)}: {message}")
    return ConfigError(f"{where}: {message}")


def _unknown_fields(data: Any, kind: mi.Type, key: Key) -> Iterator[tuple[Key, list[str]]]:
    """Every key in `data` that the contract type does not declare, with the known ones.

    The contracts keep unknown fields open for the bus (DESIGN §4); a file is stricter."""
    if isinstance(kind, mi.Metadata):
        yield from _unknown_fields(data, kind.type, key)
    elif isinstance(kind, mi.StructType) and isinstance(data, dict):
        known = {field.encode_name: field for field in kind.fields}
        for name, value in data.items():
            if name not in known:
                yield (*key, name), sorted(known)
            else:
                yield from _unknown_fields(value, known[name].type, (*key, name))
    elif isinstance(kind, mi.ListType) and isinstance(data, list):
        for index, item in enumerate(data):
            yield from _unknown_fields(item, kind.item_type, (*key, index))
    elif isinstance(kind, mi.DictType) and isinstance(data, dict):
        for name, value in data.items():
            yield from _unknown_fields(value, kind.value_type, (*key, name))
    elif isinstance(kind, mi.UnionType) and isinstance(data, dict):
        for option in kind.types:
            if isinstance(option, mi.StructType | mi.DictType):
                yield from _unknown_fields(data, option, key)
                return


_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def _error_key(message: str) -> tuple[Key, str]:
    """msgspec's "... - at `$.sites[0].id`" as (("sites", 0, "id"), "...")."""
    key: Key = ()
    found = _AT.match(message)
    if found:
        message = found.group("message")
        for part in _PATH_PART.finditer(found.group("path")):
            if part.group(0) == "[...]":
                break  # a dict value whose key msgspec does not name: stop at the dict
            key = (*key, part.group(1) if part.group(1) else int(part.group(2)))
    named = _NAMED_FIELD.match(message)
    if named:
        key = (*key, named.group(1))
    return key, message


def _convert(path: Path, parsed: _Parsed, kind: type[T]) -> T:
    for key, known in _unknown_fields(parsed.data, mi.type_info(kind), ()):
        close = difflib.get_close_matches(str(key[-1]), known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
        raise _fail(path, parsed, key, f"unknown field; {hint}")
    try:
        return msgspec.convert(parsed.data, kind)
    except msgspec.ValidationError as e:
        key, message = _error_key(str(e))
        raise _fail(path, parsed, key, message) from None


def _check_sov(path: Path, parsed: _Parsed, sov: Any) -> None:
    """Checked before conversion: msgspec names a bad dict value only as `$.sov[...]`,
    and an objective outside SOV-1..SOV-8 would otherwise pass unnoticed."""
    if not isinstance(sov, dict):
        return  # conversion reports what is wrong with it
    for objective, level in sov.items():
        if objective not in SOV_OBJECTIVES:
            expected = ", ".join(SOV_OBJECTIVES)
            raise _fail(path, parsed, ("sov", objective), f"not an objective ({expected})")
        if type(level) is not int or not 0 <= level <= 4:
            message = f"SEAL level 0..4 expected, not {level!r}"
            raise _fail(path, parsed, ("sov", objective), message)


def _check_profile(path: Path, parsed: _Parsed, profile: MemberProfile) -> None:
    """What the contract's types cannot say: site ids are unique within a member."""
    seen: set[str] = set()
    for index, site in enumerate(profile.sites):
        if site.id in seen:
            raise _fail(path, parsed, ("sites", index, "id"), f"duplicate site id {site.id!r}")
        seen.add(site.id)

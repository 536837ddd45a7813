"""Loading human-written files: errors name file, line and field."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from contracts.resources import Resources
from mesh.errors import ConfigError
from mesh.specfile import load_failover_knobs, load_member_profile, load_workload
from support import DEMO_MEMBERS

GOOD_YAML = """\
# a comment
id: rivm-meetdata
tenant: rivm
criticality: high
replicas: 2
stateful: true
resources:
  vcpu: 2
  memory_gib: 4
  storage_gib: 200
requirements:
  min_seal: 2
  jurisdictions: [NL, EU]
  classification: bbn1
  certifications: [BIO2]
run:
  command: ["{python}", "-m", "http.server", "{port}", "--directory", "{data_dir}"]
  health_path: /
"""

GOOD_TOML = """\
id = "rivm-meetdata"
tenant = "rivm"
replicas = 2

[resources]
vcpu = 2
memory_gib = 4

[requirements]
min_seal = 2
jurisdictions = ["NL"]
"""

GOOD_PROFILE = """\
id = "maas"
name = "Maas Cloud"
legal_seat = "NL"
cleared_classifications = ["openbaar", "bbn1"]

[node]  # the node's own settings; not part of the profile
nats = "nats://localhost:4222"

[sov]
SOV-1 = 4
SOV-2 = 3

[[certifications]]
name = "BIO2"
expires = 2027-06-30

[stack]
hypervisor = "KVM"

[[sites]]
id = "mst1"
country = "NL"
city = "Maastricht"

[sites.capacity]
vcpu = 64
memory_gib = 256

[[sites]]
id = "vlo1"
country = "NL"

[sites.capacity]
vcpu = 32
memory_gib = 128
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(loader, path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        loader(path)
    return str(caught.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_good_yaml_workload(tmp_path):
    spec = load_workload(write(tmp_path, "w.yaml", GOOD_YAML))
    assert spec.id == "rivm-meetdata" and spec.replicas == 2 and spec.stateful
    assert spec.resources == Resources(vcpu=2, memory_gib=4, storage_gib=200)
    assert spec.requirements.jurisdictions == ["NL", "EU"]
    assert spec.run is not None and spec.run.health_path == "/"
    # Placeholders are left for the driver.
    assert spec.run.command[0] == "{python}" and "{data_dir}" in spec.run.command


def test_good_toml_workload(tmp_path):
    spec = load_workload(write(tmp_path, "w.toml", GOOD_TOML))
    assert spec.requirements.min_seal == 2 and spec.resources.vcpu == 2


def test_yml_suffix_is_accepted(tmp_path):
    assert load_workload(write(tmp_path, "w.yml", GOOD_YAML)).tenant == "rivm"


def test_bad_value_names_file_line_and_field(tmp_path):
    text = GOOD_YAML.replace("min_seal: 2", "min_seal: 7")
    path = write(tmp_path, "w.yaml", text)
    line = line_of(text, "min_seal")
    assert error_of(load_workload, path) == (
        f"{path}:{line}: field requirements.min_seal: Expected `int` <= 4"
    )


def test_bad_list_item_names_its_own_line(tmp_path):
    text = GOOD_YAML.replace("certifications: [BIO2]", "certifications:\n    - BIO2\n    - 27001")
    path = write(tmp_path, "w.yaml", text)
    message = error_of(load_workload, path)
    assert message.startswith(f"{path}:{line_of(text, '- 27001')}: field ")
    assert "requirements.certifications[1]" in message


def test_yaml_norway_problem_gets_a_hint(tmp_path):
    text = GOOD_YAML.replace("[NL, EU]", "[NL, NO]")
    path = write(tmp_path, "w.yaml", text)
    message = error_of(load_workload, path)
    assert message.startswith(f"{path}:{line_of(text, 'jurisdictions')}: ")
    assert "requirements.jurisdictions[1]" in message
    assert 'quote it: "NO"' in message


def test_bad_id_pattern(tmp_path):
    path = write(tmp_path, "w.yaml", GOOD_YAML.replace("id: rivm-meetdata", "id: RIVM"))
    assert error_of(load_workload, path).startswith(f"{path}:2: field id: Expected `str` matching")


def test_unknown_field_is_refused_and_named(tmp_path):
    text = GOOD_YAML.replace("min_seal: 2", "min_sael: 2")
    path = write(tmp_path, "w.yaml", text)
    assert error_of(load_workload, path) == (
        f"{path}:{line_of(text, 'min_sael')}: field requirements.min_sael: "
        "unknown field; did you mean `min_seal`?"
    )


def test_unknown_field_in_an_open_contract_struct_is_refused(tmp_path):
    # Resources does not forbid unknown fields on the bus; a file must not lose a typo.
    text = GOOD_YAML.replace("  vcpu: 2", "  vcpus: 2")
    path = write(tmp_path, "w.yaml", text)
    message = error_of(load_workload, path)
    assert message.startswith(f"{path}:{line_of(text, 'vcpus')}: field resources.vcpus: unknown")


def test_unknown_top_level_field_lists_known_ones(tmp_path):
    path = write(tmp_path, "w.yaml", GOOD_YAML + "zzz: 1\n")
    message = error_of(load_workload, path)
    assert message.startswith(f"{path}:{len(GOOD_YAML.splitlines()) + 1}: field zzz: unknown")
    assert "known: " in message and "requirements" in message


def test_missing_required_field_points_at_the_parent(tmp_path):
    text = "\n".join(line for line in GOOD_YAML.splitlines() if "command" not in line) + "\n"
    path = write(tmp_path, "w.yaml", text)
    assert error_of(load_workload, path) == (
        f"{path}:{line_of(text, 'run:')}: field run.command: "
        "Object missing required field `command`"
    )


def test_missing_top_level_field(tmp_path):
    path = write(tmp_path, "w.yaml", "id: x1\ntenant: rivm\n")
    assert error_of(load_workload, path) == (
        f"{path}:1: field resources: Object missing required field `resources`"
    )


def test_yaml_syntax_error_has_its_line(tmp_path):
    path = write(tmp_path, "w.yaml", "id: x1\ntenant: rivm\n  resources: [\n")
    assert re.fullmatch(
        rf"{re.escape(str(path))}:3: invalid YAML: .+", error_of(load_workload, path)
    )


def test_duplicate_yaml_key(tmp_path):
    path = write(tmp_path, "w.yaml", GOOD_YAML + "replicas: 3\n")
    line = len(GOOD_YAML.splitlines()) + 1
    assert error_of(load_workload, path) == f"{path}:{line}: field replicas: duplicate key"


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "w.yaml", "- id: x1\n")
    assert error_of(load_workload, path).startswith(f"{path}:1: Expected `object`")
    empty = write(tmp_path, "e.yaml", "# nothing\n")
    assert error_of(load_workload, empty) == f"{empty}:1: empty file"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert error_of(load_workload, path) == f"{path}: no such file"
    assert error_of(load_member_profile, tmp_path / "nope.toml") == (
        f"{tmp_path / 'nope.toml'}: no such file"
    )


def test_unknown_suffix(tmp_path):
    path = write(tmp_path, "w.json", "{}")
    assert "use .yaml, .yml or .toml" in error_of(load_workload, path)


def test_toml_workload_validation_error_line(tmp_path):
    text = GOOD_TOML.replace("min_seal = 2", "min_seal = 9")
    path = write(tmp_path, "w.toml", text)
    assert error_of(load_workload, path) == (
        f"{path}:{line_of(text, 'min_seal')}: field requirements.min_seal: Expected `int` <= 4"
    )


def test_toml_syntax_error_has_its_line(tmp_path):
    path = write(tmp_path, "w.toml", 'id = "x1"\ntenant = \n')
    assert error_of(load_workload, path) == f"{path}:2: invalid TOML: Invalid value"


def test_good_member_profile(tmp_path):
    profile = load_member_profile(write(tmp_path, "maas.toml", GOOD_PROFILE))
    assert profile.id == "maas" and profile.sov == {"SOV-1": 4, "SOV-2": 3}
    assert profile.certifications[0].expires == dt.date(2027, 6, 30)
    assert [s.id for s in profile.sites] == ["mst1", "vlo1"]
    assert profile.sites[1].capacity == Resources(vcpu=32, memory_gib=128)
    assert profile.stack.hypervisor == "KVM"


def test_profile_error_in_the_second_site_names_its_line(tmp_path):
    text = GOOD_PROFILE.replace("vcpu = 32", "vcpu = -1")
    path = write(tmp_path, "maas.toml", text)
    assert error_of(load_member_profile, path) == (
        f"{path}:{line_of(text, 'vcpu = -1')}: field sites[1].capacity.vcpu: "
        "Expected `float` >= 0.0"
    )


def test_profile_unknown_field_in_array_of_tables(tmp_path):
    text = GOOD_PROFILE.replace('city = "Maastricht"', 'cty = "Maastricht"')
    path = write(tmp_path, "maas.toml", text)
    assert error_of(load_member_profile, path) == (
        f"{path}:{line_of(text, 'cty =')}: field sites[0].cty: unknown field; did you mean `city`?"
    )


def test_profile_bad_sov_level_and_objective(tmp_path):
    text = GOOD_PROFILE.replace("SOV-2 = 3", "SOV-2 = 5")
    path = write(tmp_path, "maas.toml", text)
    assert error_of(load_member_profile, path) == (
        f"{path}:{line_of(text, 'SOV-2')}: field sov.SOV-2: SEAL level 0..4 expected, not 5"
    )
    text = GOOD_PROFILE.replace("SOV-2 = 3", "SOV-9 = 3")
    path = write(tmp_path, "maas.toml", text)
    message = error_of(load_member_profile, path)
    assert message.startswith(f"{path}:{line_of(text, 'SOV-9')}: field sov.SOV-9: not an objective")


def test_profile_bad_country_and_missing_field(tmp_path):
    text = GOOD_PROFILE.replace('legal_seat = "NL"', 'legal_seat = "nl"')
    path = write(tmp_path, "maas.toml", text)
    assert error_of(load_member_profile, path).startswith(f"{path}:3: field legal_seat: Expected")
    text = GOOD_PROFILE.replace('name = "Maas Cloud"\n', "")
    path = write(tmp_path, "maas.toml", text)
    assert error_of(load_member_profile, path) == (
        f"{path}:1: field name: Object missing required field `name`"
    )


def test_profile_duplicate_site_id(tmp_path):
    text = GOOD_PROFILE.replace('id = "vlo1"', 'id = "mst1"')
    path = write(tmp_path, "maas.toml", text)
    second_id = [i for i, line in enumerate(text.splitlines(), 1) if 'id = "mst1"' in line][1]
    assert error_of(load_member_profile, path) == (
        f"{path}:{second_id}: field sites[1].id: duplicate site id 'mst1'"
    )


def test_profile_syntax_error(tmp_path):
    text = GOOD_PROFILE.replace("[stack]", "[stack")
    path = write(tmp_path, "maas.toml", text)
    message = error_of(load_member_profile, path)
    assert message.startswith(f"{path}:{line_of(text, '[stack')}: invalid TOML: ")


# -- [node.failover]: the node's failover knobs in the member's config file -----------------

KNOBS = """\
[node.failover]  # the failover knobs; flags override them
heartbeat = 0.5
suspicion = 2          # an int is a number of seconds too
recovery_beats = 5
flap_guard = 0
"""


def test_failover_knobs_from_the_member_config(tmp_path):
    path = write(tmp_path, "maas.toml", GOOD_PROFILE + "\n" + KNOBS)
    knobs = load_failover_knobs(path)
    assert knobs.given() == {"heartbeat": 0.5, "suspicion": 2.0, "recovery_beats": 5,
                             "flap_guard": 0.0}
    assert load_member_profile(path).id == "maas"  # the profile ignores [node]
    # No [node.failover] (or no [node] at all): nothing set, the defaults hold.
    assert load_failover_knobs(write(tmp_path, "plain.toml", GOOD_PROFILE)).given() == {}
    assert load_failover_knobs(DEMO_MEMBERS / "amstel.toml").given() == {}


@pytest.mark.parametrize(("line", "message"), [
    ("heartbeat = 0.01", "field node.failover.heartbeat: Expected `float` >= 0.05"),
    ('suspicion = "3s"', "field node.failover.suspicion: Expected `float`, got `str`"),
    ("recovery_beats = 2.5", "field node.failover.recovery_beats: Expected `int`, got `float`"),
    ("replace_rate = -1", "field node.failover.replace_rate: Expected `float` >= 0.01"),
    ("flapguard = 10", "field node.failover.flapguard: unknown field; did you mean "
                       "`flap_guard`?"),
])
def test_a_bad_failover_knob_names_file_line_and_field(tmp_path, line, message):
    text = GOOD_PROFILE + "\n[node.failover]\nrecovery_steady = 2\n" + line + "\n"
    path = write(tmp_path, "maas.toml", text)
    bad_line = text.splitlines().index(line) + 1
    with pytest.raises(ConfigError) as err:
        load_failover_knobs(path)
    assert str(err.value) == f"{path}:{bad_line}: {message}"


def test_failover_must_be_a_table(tmp_path):
    path = write(tmp_path, "maas.toml", GOOD_PROFILE.replace(
        'nats = "nats://localhost:4222"', 'nats = "nats://localhost:4222"\nfailover = 3'))
    with pytest.raises(ConfigError, match=r"maas.toml:\d+: field node.failover: Expected "
                                          r"`object`, got `int`"):
        load_failover_knobs(path)

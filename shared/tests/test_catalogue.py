"""Unit tests of lapse_shared.catalogue: loading a policy directory into resources."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from lapse_shared.catalogue import (
    Catalogue,
    CatalogueSource,
    PolicyDirectory,
    PolicyDirError,
    Resource,
)

ORDERS = """\
resources:
  - name: orders-db
    description: Orders database
    provider: postgres-role
    target:
      dsn: postgresql://lapse:${LAPSE_TARGET_ORDERS_PASSWORD}@orders:5432/orders
      member_format: "{subject}"
    roles: [app_readonly, app_write]
    max_duration: 8h
    labels: {team: orders}
"""

BILLING = """\
resources:
  - name: billing-db
    provider: postgres-role
    roles: [reader]
    max_duration: PT1H
"""


def _write(directory: Path, name: str, text: str) -> Path:
    file = directory / name
    file.write_text(text, encoding="utf-8")
    return file


def _load(directory: Path) -> Catalogue:
    return Catalogue.from_directory(PolicyDirectory.load(directory))


def test_good_files_load_every_resource(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    _write(tmp_path, "billing.yml", BILLING)
    catalogue = _load(tmp_path)
    assert sorted(catalogue.resources) == ["billing-db", "orders-db"]
    orders = catalogue.get("orders-db")
    assert orders is not None
    assert orders.provider == "postgres-role"
    assert orders.roles == ["app_readonly", "app_write"]
    assert orders.max_duration == timedelta(hours=8)
    assert orders.labels == {"team": "orders"}
    billing = catalogue.get("billing-db")
    assert billing is not None
    assert billing.max_duration == timedelta(hours=1)


def test_unknown_resource_is_none(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    assert _load(tmp_path).get("nope") is None


def test_files_with_other_extensions_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    _write(tmp_path, "notes.txt", "resources: [not, yaml, for, us]")
    directory = PolicyDirectory.load(tmp_path)
    assert [f.name for f in directory.files] == ["orders.yaml"]


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    _write(tmp_path, "empty.yaml", "")
    directory = PolicyDirectory.load(tmp_path)
    assert directory.files[0].content == {}
    assert Catalogue.from_directory(directory).resources == {}


def test_duplicate_resource_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", ORDERS)
    _write(tmp_path, "b.yaml", ORDERS.replace("${LAPSE_TARGET_ORDERS_PASSWORD}", "x"))
    with pytest.raises(PolicyDirError, match="orders-db is defined twice") as caught:
        _load(tmp_path)
    assert str(caught.value).startswith("b.yaml:")


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    _write(tmp_path, "broken.yaml", "resources:\n  - name: [unclosed\n")
    with pytest.raises(PolicyDirError, match="not valid YAML") as caught:
        PolicyDirectory.load(tmp_path)
    assert str(caught.value).startswith("broken.yaml:")


def test_top_level_that_is_not_a_mapping_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(PolicyDirError, match=r"^list\.yaml: the top level must be a mapping"):
        PolicyDirectory.load(tmp_path)


def test_invalid_resource_is_an_error_naming_the_file_and_the_entry(tmp_path: Path) -> None:
    _write(tmp_path, "bad.yaml", BILLING.replace("max_duration: PT1H", "max_duration: soon"))
    with pytest.raises(PolicyDirError, match=r"bad\.yaml resources\[0\]") as caught:
        _load(tmp_path)
    assert "max_duration" in str(caught.value)


def test_resource_with_repeated_roles_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "bad.yaml", BILLING.replace("[reader]", "[reader, reader]"))
    with pytest.raises(PolicyDirError, match="roles are listed twice"):
        _load(tmp_path)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyDirError, match="does not exist"):
        PolicyDirectory.load(tmp_path / "absent")


def test_target_variables_are_expanded_from_the_given_environment(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    orders = _load(tmp_path).get("orders-db")
    assert orders is not None
    target = orders.expanded_target({"LAPSE_TARGET_ORDERS_PASSWORD": "s3cret"})
    assert target == {
        "dsn": "postgresql://lapse:s3cret@orders:5432/orders",
        "member_format": "{subject}",
    }
    # The catalogue entry itself keeps the reference, not the secret.
    assert "${LAPSE_TARGET_ORDERS_PASSWORD}" in orders.target["dsn"]


def test_target_variables_default_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TARGET_ORDERS_PASSWORD", "from-env")
    _write(tmp_path, "orders.yaml", ORDERS)
    orders = _load(tmp_path).get("orders-db")
    assert orders is not None
    assert orders.expanded_target()["dsn"] == "postgresql://lapse:from-env@orders:5432/orders"


def test_missing_target_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    orders = _load(tmp_path).get("orders-db")
    assert orders is not None
    with pytest.raises(KeyError, match="LAPSE_TARGET_ORDERS_PASSWORD"):
        orders.expanded_target({})


def test_non_string_target_values_are_kept_as_is() -> None:
    resource = Resource.model_validate(
        {
            "name": "r",
            "provider": "p",
            "roles": ["x"],
            "max_duration": "1h",
            "target": {"port": 5432, "tls": True, "host": "${LAPSE_TARGET_HOST}"},
        }
    )
    assert resource.expanded_target({"LAPSE_TARGET_HOST": "db"}) == {"port": 5432, "tls": True, "host": "db"}


def test_version_is_stable_for_the_same_content(tmp_path: Path) -> None:
    _write(tmp_path, "orders.yaml", ORDERS)
    first = PolicyDirectory.load(tmp_path).version
    assert first.startswith("sha256:")
    assert PolicyDirectory.load(tmp_path).version == first


def test_version_changes_when_a_file_changes(tmp_path: Path) -> None:
    file = _write(tmp_path, "orders.yaml", ORDERS)
    before = PolicyDirectory.load(tmp_path).version
    file.write_text(ORDERS.replace("8h", "4h"), encoding="utf-8")
    assert PolicyDirectory.load(tmp_path).version != before


def test_version_changes_when_a_file_is_added_or_renamed(tmp_path: Path) -> None:
    file = _write(tmp_path, "orders.yaml", ORDERS)
    before = PolicyDirectory.load(tmp_path).version
    file.rename(tmp_path / "orders2.yaml")
    renamed = PolicyDirectory.load(tmp_path).version
    assert renamed != before
    _write(tmp_path, "billing.yaml", BILLING)
    assert PolicyDirectory.load(tmp_path).version not in {before, renamed}


def test_catalogue_source_rereads_a_changed_directory(tmp_path: Path) -> None:
    file = _write(tmp_path, "orders.yaml", ORDERS)
    source = CatalogueSource(tmp_path)
    assert source.current(10.0).get("billing-db") is None
    file.write_text(ORDERS + BILLING.removeprefix("resources:\n"), encoding="utf-8")
    os.utime(file, ns=(1_000_000_000_000, 1_000_000_000_000))
    assert source.current(20.0).get("billing-db") is not None


def test_catalogue_source_keeps_the_last_good_catalogue_when_a_file_breaks(tmp_path: Path) -> None:
    file = _write(tmp_path, "orders.yaml", ORDERS)
    source = CatalogueSource(tmp_path)
    good = source.current(10.0)
    file.write_text("resources: [unclosed\n", encoding="utf-8")
    os.utime(file, ns=(2_000_000_000_000, 2_000_000_000_000))
    assert source.current(20.0) is good
    assert good.get("orders-db") is not None


@pytest.mark.parametrize(
    "role", ["pg_read_all_settings", "pg_execute_server_program", "pg_write_server_files", "postgres"]
)
def test_a_catalogue_offering_a_predefined_or_superuser_role_is_refused_at_load(
    tmp_path: Path, role: str
) -> None:
    (tmp_path / "resources.yaml").write_text(
        "resources:\n  - name: orders-db\n    provider: postgres-role\n"
        f"    roles: [app_readonly, {role}]\n    max_duration: 1h\n"
    )
    with pytest.raises(PolicyDirError, match=f"role '{role}' is a"):
        Catalogue.from_directory(PolicyDirectory.load(tmp_path))


def test_other_providers_may_name_their_actions_freely() -> None:
    resource = Resource(
        name="deploys", provider="webhook", roles=["pg_dump"], max_duration=timedelta(hours=1)
    )
    assert resource.roles == ["pg_dump"]

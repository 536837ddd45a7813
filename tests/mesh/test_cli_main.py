"""The command line's global options work before and after the command."""

from __future__ import annotations

from mesh.cli.main import hoist_global_options


def test_global_options_after_the_command_move_in_front() -> None:
    argv = ["members", "--json", "--nats", "nats://h:4222", "--data-dir=/tmp/x"]
    assert hoist_global_options(argv) == [
        "--nats", "nats://h:4222", "--data-dir=/tmp/x", "members", "--json",
    ]


def test_order_of_everything_else_is_kept_and_double_dash_ends_the_scan() -> None:
    argv = ["--as", "dommel", "workload", "submit", "f.yaml", "--", "--nats", "x"]
    assert hoist_global_options(argv) == argv


def test_a_trailing_option_without_value_is_left_for_typer_to_refuse() -> None:
    assert hoist_global_options(["members", "--nats"]) == ["members", "--nats"]

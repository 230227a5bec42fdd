# SPDX-License-Identifier: Apache-2.0
"""A trial no node can hold is said at once, not left pending: before anything is written on this
machine, and against the real nodes once Ray is up (``sweeps.preflight``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sweeps.errors import SpecError
from sweeps.loading import load_spec
from tests.helpers.sweeps import tiny_spec


def test_trial_larger_than_this_machine_is_refused_before_anything_is_written(tmp_path):
    from haloae.cli import main

    path = tiny_spec(tmp_path, "huge", resources={"cpu": 4096})
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    assert "resources.cpu" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.slow  # starts a local Ray
def test_no_node_large_enough_is_an_error_on_our_ray_and_a_warning_on_a_cluster(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    from sweeps.preflight import check_schedulable

    spec = load_spec(tiny_spec(tmp_path, "big", resources={"cpu": 2}))
    fits = load_spec(tiny_spec(tmp_path, "fits", resources={"cpu": 1}))
    ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        check_schedulable(fits, own_cluster=True)
        with pytest.raises(SpecError, match=r"resources: a trial needs 2 CPU .*largest: 1 CPU"):
            check_schedulable(spec, own_cluster=True)
        check_schedulable(spec, own_cluster=False)
        assert "Warning:" in capsys.readouterr().err
    finally:
        ray.shutdown()

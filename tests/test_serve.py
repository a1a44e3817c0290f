from __future__ import annotations

import os


def test_serve_builds_scheduled_deployments_for_the_lake(tmp_path):
    from flows.serve import deployments

    deps = {d.name: d for d in deployments(str(tmp_path / "lake"))}
    assert set(deps) == {"versioning", "promotion", "drift-report", "maintenance"}
    for d in deps.values():
        assert d.parameters["lake"] == os.path.abspath(tmp_path / "lake")
        assert d.schedules, f"{d.name} has no schedule"
    assert deps["versioning"].schedules[0].schedule.interval.total_seconds() == 300
    assert deps["maintenance"].schedules[0].schedule.cron == "17 3 * * *"
    assert deps["drift-report"].schedules[0].schedule.interval.total_seconds() == 3600
    assert deps["drift-report"].parameters["window"] == "auto"  # chosen from the data at each run
    assert deployments(str(tmp_path / "lake"), window="2000")[2].parameters["window"] == "2000"

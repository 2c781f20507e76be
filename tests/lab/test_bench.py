"""peer.lab.bench: the MDA scaling benchmark runs and honours its time cap."""

from __future__ import annotations

from peer.lab.bench import benchmark_mda


def test_benchmark_smoke() -> None:
    rows = benchmark_mda(ks=(9,), d=16, repeats=2, time_limit_s=5.0, verbose=False)
    assert [r["case"] for r in rows] == ["adversarial", "iid"]
    for r in rows:
        assert (r["K"], r["f"], r["q"], r["subsets"]) == (9, 2, 7, 36)
        assert r["runs"] == 2 and not r["over_cap"] and r["median_s"] <= r["max_s"]
    capped = benchmark_mda(ks=(9,), d=16, repeats=2, time_limit_s=0.0, cases=("iid",), verbose=False)
    assert capped[0]["over_cap"] and capped[0]["runs"] <= 1

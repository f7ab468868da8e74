"""Scaling profiles: the reference CSV format, validation, shapes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from carbonscaler.profile import (
    ProfileError,
    ProfileWarning,
    ScalingProfile,
    amdahl_profile,
    linear_profile,
    load_profile,
    parse_profile_spec,
    power_law_profile,
)


def write(tmp_path: Path, text: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["nbody10k.csv", "nbody100k.csv"])
def test_reference_profiles_load(shared_dir: Path, name: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = load_profile(shared_dir / "profiles" / name)
    # nbody10k's measured power makes its curve slightly non-concave; nbody100k is concave.
    warned = any(issubclass(w.category, ProfileWarning) for w in caught)
    assert warned == (name == "nbody10k.csv")
    assert profile.max_servers == 7
    assert profile.throughput[0] == 0.0 and profile.power_w[0] == 0.0
    assert np.all(np.diff(profile.throughput) > 0)
    assert profile.marginal_capacity()[0] == pytest.approx(profile.throughput[1])
    assert len(profile.marginal_power_w()) == 7


def test_nbody100k_is_near_linear_and_nbody10k_diminishes(shared_dir: Path) -> None:
    big = load_profile(shared_dir / "profiles" / "nbody100k.csv")
    with pytest.warns(ProfileWarning):
        small = load_profile(shared_dir / "profiles" / "nbody10k.csv")
    speedup_big = big.throughput[7] / big.throughput[1]
    speedup_small = small.throughput[7] / small.throughput[1]
    assert speedup_big > 6.0
    assert speedup_small < 4.0


def test_leading_zero_row_is_optional(tmp_path: Path) -> None:
    a = load_profile(write(tmp_path, "nodes,throughput,power\n0,0.0,0.0\n1,10,50\n2,18,100\n"))
    b = load_profile(write(tmp_path, "nodes,throughput,power\n1,10,50\n2,18,100\n", "b.csv"))
    assert np.array_equal(a.throughput, b.throughput)
    assert np.array_equal(a.power_w, b.power_w)


def test_columns_in_any_order_and_extra_columns(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "power,nodes,note,throughput\n50,1,x,10\n100,2,y,18\n"))
    assert p.throughput.tolist() == [0.0, 10.0, 18.0]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nodes,throughput\n1,2\n", "missing ['power']"),
        ("nodes,throughput,power\n1,10,50\n3,20,150\n", "missing [2]"),
        ("nodes,throughput,power\n1,10,50\n1,11,50\n", "line 3: duplicate row for nodes=1"),
        ("nodes,throughput,power\n1,10,50\n2,0,100\n", "nodes=2: throughput must be positive"),
        ("nodes,throughput,power\n1,10,-5\n", "nodes=1: power must be positive"),
        ("nodes,throughput,power\n1,10,50\n2,18,40\n", "nodes=2: power 40.0 W is below"),
        ("nodes,throughput,power\n1,ten,50\n", "line 2: not a number"),
        ("nodes,throughput,power\n1.5,10,50\n", "whole number"),
        ("nodes,throughput,power\n0,1,0\n1,10,50\n", "nodes=0 row must be 0"),
        ("nodes,throughput,power\n", "no rows"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ProfileError, match=None) as info:
        load_profile(write(tmp_path, text))
    assert fragment in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="profile file not found"):
        load_profile("/nonexistent/profile.csv")


def test_falling_throughput_is_accepted_with_warning(tmp_path: Path) -> None:
    with pytest.warns(ProfileWarning, match=r"falls when going to \[3\]"):
        p = load_profile(write(tmp_path, "nodes,throughput,power\n1,10,50\n2,15,100\n3,14,150\n"))
    assert p.max_servers == 3


def test_non_concave_is_accepted_with_warning(tmp_path: Path) -> None:
    with pytest.warns(ProfileWarning, match="not concave"):
        p = load_profile(write(tmp_path, "nodes,throughput,power\n1,10,50\n2,12,100\n3,30,150\n"))
    assert not p.is_concave()


def test_parametric_shapes() -> None:
    lin = linear_profile(4, base_throughput=2.0, power_per_server_w=100.0)
    assert lin.throughput.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert lin.power_w.tolist() == [0.0, 100.0, 200.0, 300.0, 400.0]
    amd = amdahl_profile(8, 0.05)
    assert amd.throughput[8] == pytest.approx(1 / (0.05 + 0.95 / 8))
    assert amd.is_concave()
    pl = power_law_profile(4, 0.5)
    assert pl.throughput[4] == pytest.approx(2.0)
    assert pl.is_concave()
    with pytest.raises(ProfileError, match="serial fraction"):
        amdahl_profile(4, 1.5)
    with pytest.raises(ProfileError, match="exponent"):
        power_law_profile(4, 0.0)


def test_profile_specs(tmp_path: Path) -> None:
    p = parse_profile_spec("amdahl:0.05,servers=16,power=210")
    assert p.max_servers == 16 and p.power_w[1] == 210.0
    assert parse_profile_spec("linear").max_servers == 8
    assert parse_profile_spec("powerlaw:0.8,throughput=3").throughput[1] == 3.0
    with pytest.raises(ProfileError, match="neither an existing CSV file nor a known shape"):
        parse_profile_spec("quadratic")
    with pytest.raises(ProfileError, match="unknown profile option"):
        parse_profile_spec("linear,speed=2")
    path = write(tmp_path, "nodes,throughput,power\n1,10,50\n")
    assert parse_profile_spec(str(path)).max_servers == 1


def test_bounds_checks() -> None:
    p = linear_profile(4)
    with pytest.raises(ProfileError, match="lower --max to 4"):
        p.check_bounds(1, 6)
    with pytest.raises(ProfileError, match="at least 1"):
        p.check_bounds(0, 2)
    with pytest.raises(ProfileError, match="below min servers"):
        p.check_bounds(3, 2)


def test_csv_roundtrip(tmp_path: Path) -> None:
    p = amdahl_profile(5, 0.1, power_per_server_w=55.5)
    p.to_csv(tmp_path / "out.csv")
    q = load_profile(tmp_path / "out.csv")
    assert np.array_equal(p.throughput, q.throughput)
    assert np.array_equal(p.power_w, q.power_w)
    assert not (tmp_path / "out.csv.tmp").exists()


def test_profile_arrays_are_immutable() -> None:
    p = ScalingProfile(np.array([0.0, 1.0]), np.array([0.0, 5.0]))
    with pytest.raises(ValueError):
        p.throughput[1] = 2.0

"""constraints/: one tested pin set per platform, each meeting the agent's declared ranges.

The network half (a wheel of every pin for each platform's Python and machine, read from PyPI)
is `make platforms`; what is checked here needs no network."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def load_resolver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("resolve", ROOT / "constraints" / "resolve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["resolve"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


resolve = load_resolver()
PIN_FILES = [ROOT / "constraints" / name for name in resolve.PLATFORM_FILES]


@pytest.mark.parametrize("path", PIN_FILES, ids=lambda p: p.name)
def test_every_platform_meets_the_agent_ranges_on_each_of_its_pythons(path: Path) -> None:
    pin_set = resolve.read_pin_set(path)
    requirements = {"lola-deft[agent]": resolve.agent_requirements("agent")}
    for python in pin_set.pythons:
        available = resolve.pins_for(pin_set, python)
        env = resolve.environment(python, pin_set.machine)
        assert resolve.unmet(requirements, available, env, pin_set.omitted) == [], python


def test_the_declared_python_range_covers_every_platform() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    classifiers = {c.rsplit(" ", 1)[-1] for c in project["classifiers"] if "Python :: 3." in c}
    for path in PIN_FILES:
        assert set(resolve.read_pin_set(path).pythons) <= classifiers, path.name


def test_the_floors_are_what_the_oldest_stack_runs() -> None:
    """Each floor pyproject declares for the agent is exactly a version `make compat` tests."""
    oldest = resolve.pins_for(resolve.read_pin_set(ROOT / "constraints/oldest.txt"), "3.11")
    floors = {}
    for line in resolve.agent_requirements("agent"):
        name, _, rest = line.partition(">=")
        floors[canonicalize_name(name)] = Version(rest.split(",")[0])
    tested_elsewhere = {"torch"}  # no CPU wheel of torch 2.1 or 2.2 installs here
    for name, floor in floors.items():
        if name not in tested_elsewhere:
            assert oldest[name].release[: len(floor.release)] == floor.release, name


def test_jetson_and_termux_keep_the_platform_builds() -> None:
    jetson = resolve.read_pin_set(ROOT / "constraints/jetson.txt")
    assert jetson.pythons == ["3.10"] and jetson.machine == "aarch64"
    assert jetson.provided["torch"] == Version("2.2.0")  # the default base image's
    assert resolve.pins_for(jetson, "3.10")["numpy"] < Version("2")  # JetPack's torch: numpy 1.x
    termux = resolve.read_pin_set(ROOT / "constraints/termux.txt")
    assert {"torch", "numpy", "grpcio", "psutil", "tokenizers"} <= set(termux.provided)
    assert termux.tags == ["linux_aarch64"]  # no manylinux wheel installs on Android
    # Nothing Termux provides is pinned for pip, which would then try to replace it.
    assert not {canonicalize_name(r.name) for r in termux.pins} & set(termux.provided)


def test_unmet_names_a_missing_pin_and_a_version_out_of_range() -> None:
    env = resolve.environment("3.10", "aarch64")
    available = {"numpy": Version("1.26.4"), "transformers": Version("4.57.6")}
    requirements = {
        "peft": [
            "numpy>=2",
            "transformers",
            "torch>=1.13",
            'tomli; python_version < "3.11"',
            'colorama; platform_system == "Windows"',
            'pytest; extra == "test"',
            "hf-xet",
        ]
    }
    problems = resolve.unmet(requirements, available, env, omitted={"hf-xet"})
    assert problems == [
        "peft needs numpy>=2, pinned numpy==1.26.4",
        "peft needs torch>=1.13, which is not pinned",
        'peft needs tomli; python_version < "3.11", which is not pinned',
    ]


def test_a_malformed_pin_file_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose.txt"
    loose.write_text("#platform python=3.10 machine=x86_64 tags=manylinux2014_x86_64\nnumpy>=1\n")
    with pytest.raises(ValueError, match=r"loose.txt:2: 'numpy>=1' is not an exact pin"):
        resolve.read_pin_set(loose)
    headless = tmp_path / "headless.txt"
    headless.write_text("numpy==1.26.4\n")
    with pytest.raises(ValueError, match="needs a '#platform"):
        resolve.read_pin_set(headless)

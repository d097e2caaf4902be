"""The workshop VM definition: `vagrant validate` accepts it (CI installs Vagrant for this test)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (apt-get install vagrant)")
def test_vagrant_validate_accepts_the_workshop_vm(tmp_path: Path) -> None:
    env = {**os.environ, "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_HOME": str(tmp_path / "home")}
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT_DIR, capture_output=True,
                            text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_the_vm_provisions_from_the_synced_tree_with_the_repository_script() -> None:
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    assert 'synced_folder "..", "/netlab"' in text
    assert "bash /netlab/vagrant/provision.sh" in text
    for provider in ("virtualbox", "libvirt", "vmware_desktop", "parallels"):
        assert f'provider "{provider}"' in text

"""The real smbd, driven by the real smbclient, through a real edge and hub."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import LoopThread, Stack, make_deployment
from tests.samba import Smbd, running_smbd

pytestmark = pytest.mark.skipif(shutil.which("smbd") is None, reason="samba not installed")


@pytest.fixture(scope="module")
def smbd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smbd]:
    with running_smbd(tmp_path_factory.mktemp("smbd")) as s:
        yield s


@pytest.fixture(scope="module")
def smb_stack(smbd: Smbd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    lt = LoopThread()
    dep = make_deployment(tmp_path_factory.mktemp("dep"), {"smb": smbd.port})
    st = Stack(dep, lt, pool={"min_idle": 4})
    st.start()
    yield st
    st.close()
    lt.close()


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_put_get_64mib(smbd: Smbd, smb_stack: Stack, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 << 20))
    smbd.smbclient(smb_stack.port, "put big.bin big.bin", cwd=tmp_path)
    assert sha(smbd.share / "big.bin") == sha(src)
    smbd.smbclient(smb_stack.port, "get big.bin back.bin", cwd=tmp_path)
    assert sha(tmp_path / "back.bin") == sha(src)


def test_directory_operations(smbd: Smbd, smb_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("hello from the office\n")
    smbd.smbclient(
        smb_stack.port, "mkdir projects; cd projects; put note.txt note.txt", cwd=tmp_path
    )
    assert (smbd.share / "projects" / "note.txt").read_text() == "hello from the office\n"
    out = smbd.smbclient(smb_stack.port, "ls projects/*")
    assert "note.txt" in out
    smbd.smbclient(smb_stack.port, "rename projects\\note.txt projects\\renamed.txt")
    assert (smbd.share / "projects" / "renamed.txt").exists()
    assert not (smbd.share / "projects" / "note.txt").exists()
    smbd.smbclient(smb_stack.port, "rm projects\\renamed.txt; rmdir projects")
    assert not (smbd.share / "projects").exists()


def test_twenty_clients_at_once(smbd: Smbd, smb_stack: Stack, tmp_path: Path) -> None:
    files = {}
    for i in range(20):
        p = tmp_path / f"c{i}.bin"
        p.write_bytes(os.urandom(1 << 20 + (i % 3)))
        files[i] = sha(p)

    def one(i: int) -> str:
        smbd.smbclient(
            smb_stack.port, f"put c{i}.bin c{i}.bin; get c{i}.bin r{i}.bin", cwd=tmp_path
        )
        return sha(tmp_path / f"r{i}.bin")

    with ThreadPoolExecutor(20) as pool:
        got = dict(zip(range(20), pool.map(one, range(20)), strict=True))
    assert got == files
    for i, digest in files.items():
        assert sha(smbd.share / f"c{i}.bin") == digest

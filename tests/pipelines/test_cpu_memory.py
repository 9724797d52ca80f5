"""keep_freed_memory: glibc keeps large freed blocks while a CPU run lasts, and gives them back after."""

import threading

import pytest
import torch

from pipelines import cpu_memory
from pipelines.cpu_memory import USUAL_MMAP_BYTES, USUAL_TRIM_BYTES, keep_freed_memory


class FakeLibc:
    def __init__(self, accepts: bool = True):
        self.accepts, self.calls = accepts, []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return int(self.accepts)

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: fake)
    return fake


def settings(fake):
    """The (parameter, value) pairs passed to mallopt so far."""
    return {call[1:] for call in fake.calls if call[0] == "mallopt"}


def test_a_cpu_run_raises_both_thresholds_then_restores_the_usual_ones_and_trims(libc):
    with keep_freed_memory("cpu") as active:
        assert active
        assert settings(libc) == {(-3, cpu_memory.KEEP_BYTES), (-1, cpu_memory.KEEP_BYTES)}
        assert ("malloc_trim", 0) not in libc.calls
    assert {(-3, USUAL_MMAP_BYTES), (-1, USUAL_TRIM_BYTES)} <= settings(libc)
    assert libc.calls[-1] == ("malloc_trim", 0)


def test_nested_and_concurrent_runs_restore_only_when_the_last_one_leaves(libc):
    inner_done = threading.Event()

    def second_session():
        with keep_freed_memory("cpu") as active:
            assert active
        inner_done.set()

    with keep_freed_memory("cpu"):
        worker = threading.Thread(target=second_session)
        worker.start()
        worker.join()
        assert inner_done.is_set()
        assert ("malloc_trim", 0) not in libc.calls  # the outer run is still going
    assert libc.calls.count(("malloc_trim", 0)) == 1
    assert cpu_memory._depth == 0


def test_gpu_runs_and_other_c_libraries_are_left_alone(monkeypatch, libc):
    with keep_freed_memory(torch.device("cuda")) as active:
        assert not active
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    with keep_freed_memory("cpu") as active:
        assert not active
    assert libc.calls == []


def test_a_refused_setting_is_not_in_force_and_nothing_is_restored(monkeypatch):
    fake = FakeLibc(accepts=False)
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: fake)
    with keep_freed_memory("cpu") as active:
        assert not active
    assert ("malloc_trim", 0) not in fake.calls and cpu_memory._depth == 0


def test_an_error_inside_still_restores(libc):
    with pytest.raises(RuntimeError), keep_freed_memory("cpu"):
        raise RuntimeError("model failed")
    assert libc.calls[-1] == ("malloc_trim", 0) and cpu_memory._depth == 0


def test_the_real_c_library_accepts_the_settings_where_it_is_glibc():
    if cpu_memory._glibc() is None:
        pytest.skip("not a glibc system")
    with keep_freed_memory("cpu") as active:
        assert active
        block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB: above the usual mmap threshold
        assert int(block.sum()) == 64 << 20
        del block
    assert cpu_memory._depth == 0


def test_giving_back_trims_the_heap_on_glibc_and_does_nothing_elsewhere(libc, monkeypatch):
    cpu_memory.give_back_freed_memory()
    assert libc.calls == [("malloc_trim", 0)]
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    cpu_memory.give_back_freed_memory()  # no glibc: no call, no error
    assert libc.calls == [("malloc_trim", 0)]

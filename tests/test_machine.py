"""The CPU as the OS describes it: its model and the flags that decide bf16."""

from so101_sim2real import machine


def test_bf16_follows_the_flags(monkeypatch):
    for flags, native in (("fpu avx2 avx512f", False), ("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True)):
        monkeypatch.setattr(machine, "_cpuinfo", lambda flags=flags: {"model name": "Test CPU", "flags": flags})
        assert machine.native_bf16() is native
        assert machine.describe_cpu().startswith("Test CPU (")


def test_this_machine_is_described():
    line = machine.describe_cpu()
    assert machine.cpu_model() in line and ("avx" in line or "no avx2" in line)

"""The CPU as the OS describes it: its model and the flags that decide bf16."""

from so101_sim2real import machine


def test_bf16_follows_the_flags(monkeypatch):
    for flags, native in (("fpu avx2 avx512f", False), ("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True)):
        monkeypatch.setattr(machine, "_cpuinfo", lambda flags=flags: {"model name": "Test CPU", "flags": flags})
        assert machine.native_bf16() is native
        assert machine.describe_cpu().startswith("Test CPU (")


def test_this_machine_is_described():
    line = machine.describe_cpu()
    assert line.startswith(machine.cpu_model())
    for flag in machine.REPORTED_FLAGS:  # each flag named exactly when the OS lists it
        assert (f" {flag}" in line.replace("(", " ").replace(",", " ")) == (flag in machine.cpu_flags())

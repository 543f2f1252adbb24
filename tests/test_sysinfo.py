"""handgrad.sysinfo and ``handgrad info --system``'s module: NumPy's BLAS, the CPU's
vector extensions, and the warning when the environment forces a slower kernel."""

import json
import os
import platform
import subprocess
import sys

import pytest

from handgrad import sysinfo
from handgrad.sysinfo import cpu_flags, cpu_vector_level, kernel_warning

AVX512 = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"}
AVX2 = {"sse4_2", "avx", "avx2", "fma"}


def test_vector_levels():
    assert cpu_vector_level(AVX512) == 4
    assert cpu_vector_level(AVX512 - {"avx512bw"}) == 3  # AVX-512F alone is not SkylakeX's set
    assert cpu_vector_level(AVX2) == 3
    assert cpu_vector_level({"avx"}) == 2
    assert cpu_vector_level(set()) == 1
    assert sysinfo.kernel_level("SkylakeX") == 4 and sysinfo.kernel_level("haswell") == 3
    assert sysinfo.kernel_level("SomeFutureCore") is None and sysinfo.kernel_level(None) is None


@pytest.mark.parametrize("env, kernel, native, flags, expected", [
    ({"OPENBLAS_CORETYPE": "Haswell"}, "Haswell", "SkylakeX", AVX512, "forces"),
    ({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}, "Haswell", "SkylakeX",
     AVX512, "force"),
    ({"OPENBLAS_CORETYPE": "Haswell"}, "Haswell", None, AVX512, "its AVX-512 kernel"),
    ({"OPENBLAS_CORETYPE": "Sandybridge"}, "Sandybridge", "Zen", AVX2, "Zen (AVX2)"),
    ({"OPENBLAS_CORETYPE": "Haswell"}, "Haswell", "Haswell", AVX2, None),  # not slower
    ({"OPENBLAS_L2_SIZE": "1048576"}, "SkylakeX", "SkylakeX", AVX512, None),  # same kernel
    ({}, "Haswell", "Haswell", AVX512, None),  # nothing forced: not the environment's doing
    ({"OPENBLAS_CORETYPE": "Haswell"}, "Haswell", None, None, None),  # nothing to compare
])
def test_kernel_warning(env, kernel, native, flags, expected):
    line = kernel_warning(env, kernel, native, flags)
    if expected is None:
        assert line is None
        return
    assert line.startswith("warning: ") and "\n" not in line
    assert expected in line
    for name, value in env.items():
        assert f"{name}={value}" in line and f"-u {name}" in line  # the fix names each one
    assert f"onto {kernel}" in line


def test_cpu_flags_parses_proc_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Example CPU\nflags\t\t: fpu sse4_2 avx avx2 "
                 "fma\n\nprocessor\t: 1\nmodel name\t: Example CPU\nflags\t\t: fpu\n")
    model, flags = cpu_flags(f)
    assert model == "Example CPU" and {"avx2", "fma"} <= flags and "avx512f" not in flags
    assert cpu_flags(tmp_path / "missing") == (None, None)


def test_system_info_reports_numpys_blas_and_is_json():
    info = sysinfo.system_info(probe_native=False)
    json.dumps(info)  # JSON-able as it is
    assert info["numpy"] and info["blas"]["library"]
    assert info["cpu"]["cores"] == os.cpu_count()
    assert info["accelerator"]["status"]
    text = sysinfo.format_system_info(info)
    for word in ("blas", "kernel", "threads", "vectors", "accelerator"):
        assert word in text


def _report(env_changes):
    env = {k: v for k, v in os.environ.items() if k not in sysinfo.OPENBLAS_ENV}
    env.update(env_changes)
    r = subprocess.run([sys.executable, "-c", "from handgrad.cli import main; "
                        "main(['info', '--system', '--json'])"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_forced_older_kernel_is_warned_about_with_the_fix():
    native = _report({})
    if native["blas"]["library"] != "openblas" or not native["blas"]["kernel"]:
        pytest.skip(f"NumPy's BLAS is {native['blas']['library']}, without a kernel to force")
    if sysinfo.kernel_level(native["blas"]["kernel"]) != 4:
        pytest.skip(f"this CPU runs OpenBLAS's {native['blas']['kernel']} kernel: "
                    "Haswell would not be slower")
    assert native["warning"] is None and native["environment"] == {}
    forced = _report({"OPENBLAS_CORETYPE": "Haswell"})
    assert forced["blas"]["kernel"] == "Haswell"
    assert forced["native_kernel"] == native["blas"]["kernel"]
    assert "OPENBLAS_CORETYPE=Haswell" in forced["warning"]
    assert "unset OPENBLAS_CORETYPE" in forced["warning"]


def test_system_info_is_exported():
    import handgrad

    assert handgrad.system_info is sysinfo.system_info


def test_unknown_core_type_is_flagged_with_the_ones_openblas_accepts():
    line = sysinfo.coretype_warning({"OPENBLAS_CORETYPE": "bogus"}, "x86_64")
    assert line.startswith("warning: OPENBLAS_CORETYPE='bogus' is not a core type OpenBLAS "
                           "knows on x86_64")
    assert "Haswell" in line and "SkylakeX" in line and "unset it" in line
    assert "neoversen1" in sysinfo.coretype_warning({"OPENBLAS_CORETYPE": "Haswell"}, "aarch64")
    for env in ({}, {"OPENBLAS_CORETYPE": "haswell"}, {"OPENBLAS_CORETYPE": "SkylakeX"}):
        assert sysinfo.coretype_warning(env, "x86_64") is None
    assert sysinfo.coretype_warning({"OPENBLAS_CORETYPE": "bogus"}, "riscv64") is None


def test_info_system_flags_an_unknown_core_type():
    env = dict(os.environ, OPENBLAS_CORETYPE="bogus")
    r = subprocess.run([sys.executable, "-m", "handgrad", "info", "--system"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "OPENBLAS_CORETYPE='bogus' is not a core type OpenBLAS knows" in r.stdout

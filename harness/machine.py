"""The machine a run ran on: CPU model, ISA features, cores, memory, accelerators and their drivers,
and a label. Recorded in every run (run.json `machine`) and in every result (`machine`: the label), so
a run merged from several machines keeps each case's machine in its identity.

Read from Linux's own files (/proc/cpuinfo, /proc/meminfo, /proc/driver/nvidia, /sys/class/drm): they
are what py-cpuinfo reads on Linux too, and reading them costs a millisecond where py-cpuinfo's
get_cpu_info() costs about a second (it starts a subprocess). py-cpuinfo (pinned) is the fallback
where there is no /proc/cpuinfo (macOS runners).

The default label is `<arch>-<short CPU model>` (x86_64-amd-epyc, aarch64-neoverse-n1): hostname-
independent on purpose. CI runners of one kind get a new hostname every job, and runs made on the
same kind of machine should merge as the same machine; two different kinds must not. `--machine NAME`
(or HARNESS_MACHINE) names it when the model alone does not tell machines apart."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

# The ISA features that decide which kernels run, by the names Linux gives them in /proc/cpuinfo.
X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")
# Arm: asimd is NEON; asimdhp/fphp half precision arithmetic; asimddp dot product; i8mm; bf16; sve/sve2.
ARM_FEATURES = ("asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")
# Arm's /proc/cpuinfo has no model name: the implementer and part numbers say which core it is.
ARM_PARTS = {("0x41", "0xd0c"): "neoverse-n1", ("0x41", "0xd40"): "neoverse-v1", ("0x41", "0xd49"): "neoverse-n2",
             ("0x41", "0xd4f"): "neoverse-v2", ("0x41", "0xd8e"): "neoverse-n3", ("0x41", "0xd84"): "neoverse-v3",
             ("0x41", "0xd08"): "cortex-a72", ("0x41", "0xd0b"): "cortex-a76", ("0xc0", "0xac3"): "ampere-one",
             ("0x61", "0x022"): "apple-m1", ("0x61", "0x032"): "apple-m2"}
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_label(label: str) -> str:
    """A machine label, or a one-line error saying what a label must be."""
    if not LABEL.fullmatch(label or ""):
        raise HarnessError(f"machine label {label!r} is not valid: expected 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit (like x86_64-amd-epyc or ci-arm64)")
    return label


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (every core of a machine has the same features)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _py_cpuinfo() -> dict[str, str]:
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    except Exception:
        return {}
    return {"model name": str(info.get("brand_raw") or ""), "flags": " ".join(info.get("flags") or [])}


def cpu_fields() -> dict[str, str]:
    """The first processor's fields (flags, model name, Arm's implementer and part): /proc/cpuinfo, else py-cpuinfo."""
    return _cpuinfo() or _py_cpuinfo()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def short_model(cpu: str) -> str:
    """A CPU model as a label part: 'Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz' -> 'intel-xeon-platinum-8480'."""
    text = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", " ", cpu)
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    return "-".join(words[:4]) or "unknown"


def _accelerators() -> list[dict]:
    """NVIDIA GPUs (driver from /proc/driver/nvidia, names from nvidia-smi where it is) and DRM render
    nodes (/dev/dri: Intel, AMD and other GPUs), each with its driver. Empty on a machine without."""
    found: list[dict] = []
    nvidia = Path("/proc/driver/nvidia")
    if nvidia.exists():
        driver = None
        try:
            m = re.search(r"Kernel Module\s+([\d.]+)", (nvidia / "version").read_text())
            driver = m.group(1) if m else None
        except OSError:
            pass
        names: list[str] = []
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10)
                names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            except (OSError, subprocess.SubprocessError):
                pass
        if not names:
            for info in sorted((nvidia / "gpus").glob("*/information")):
                m = re.search(r"Model:\s+(.+)", info.read_text(errors="replace"))
                names.append(m.group(1).strip() if m else "NVIDIA GPU")
        found += [{"kind": "gpu", "vendor": "nvidia", "name": n, "driver": f"nvidia {driver}" if driver else "nvidia"} for n in names]
    for node in sorted(Path("/sys/class/drm").glob("renderD*")):
        device = node / "device"
        try:
            driver = os.path.basename(os.path.realpath(device / "driver"))
            vendor = (device / "vendor").read_text().strip()
        except OSError:
            continue
        if driver == "nvidia" and any(a["vendor"] == "nvidia" for a in found):
            continue
        found.append({"kind": "gpu", "vendor": {"0x8086": "intel", "0x1002": "amd", "0x10de": "nvidia"}.get(vendor, vendor),
                      "name": f"/dev/dri/{node.name}", "driver": driver})
    return found


def identify(label: str | None = None) -> dict:
    """This machine: label (given, else HARNESS_MACHINE, else `<arch>-<short CPU model>`), arch, cpu,
    ISA features, cores, memory, accelerators."""
    arch = platform.machine()
    info = cpu_fields()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if arch in ("aarch64", "arm64"):
        cpu = info.get("model name") or ARM_PARTS.get((info.get("CPU implementer", ""), info.get("CPU part", "")), "")
        cpu = cpu or f"arm implementer {info.get('CPU implementer', '?')} part {info.get('CPU part', '?')}"
        features = [f for f in ARM_FEATURES if f in flags]
    else:
        cpu = info.get("model name") or platform.processor() or arch
        features = [f for f in X86_FEATURES if f in flags]
    given = label or os.environ.get("HARNESS_MACHINE")
    return {
        "label": check_label(given) if given else f"{arch}-{short_model(cpu)}",
        "arch": arch,
        "cpu": cpu,
        "features": features,
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "accelerators": _accelerators(),
        "virtualised": "hypervisor" in flags,
    }

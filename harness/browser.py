"""The browser runtimes, Python side: what `harness doctor` says about Chromium, its GPU (WebGL) and
WebGPU adapter, and each browser backend.

The facts come from `node js/browser/probe.js`, which opens Debian's Chromium once and starts each
backend in a page of its own (about 8 s on a 2-core machine). The answer is kept in
`.harness/browser-probe.json` and reused while the Chromium binary, its extra flags, the npm lock and
the browser worker's files are unchanged, so doctor stays quick. The runtime table's `availability()` never
starts a browser; this probe adds what only a running browser can tell (a WebGPU adapter, WebGL).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.runners.table import REPO, RUNTIMES, BrowserRuntime

PROBE = REPO / "js" / "browser" / "probe.js"
CACHE = REPO / ".harness" / "browser-probe.json"
PROBE_TIMEOUT_S = 120.0
FIX_CHROMIUM = "make browser   (apt-get install chromium; or set HARNESS_CHROMIUM to a Chromium binary)"
FIX_WEBGPU = ("a GPU and driver with a WebGPU adapter; Chromium is started with --enable-unsafe-webgpu (Linux needs it), "
              "which gives Dawn's SwiftShader fallback adapter when there is no GPU")
FIX_WEBGL = "a WebGL2 context: Chromium is started with --use-angle=swiftshader --enable-unsafe-swiftshader (no GPU needed)"


def chromium_path() -> str:
    return os.environ.get("HARNESS_CHROMIUM") or "/usr/bin/chromium"


def _key() -> str:
    """What the probe's answer depends on: the browser binary, the pinned npm packages, the page."""
    h = hashlib.sha256()
    chromium = Path(chromium_path())
    try:
        st = chromium.resolve().stat()
        h.update(f"{chromium.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    except OSError:
        h.update(b"no chromium")
    h.update(os.environ.get("HARNESS_CHROMIUM_ARGS", "").encode())
    for p in [REPO / "js" / "package-lock.json", *sorted((REPO / "js" / "browser").rglob("*.js")), *sorted((REPO / "js" / "browser").rglob("*.html"))]:
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(f"missing {p}".encode())
    return h.hexdigest()[:20]


def probe(refresh: bool = False) -> dict[str, Any]:
    """The probe's answer (cached); {"error": ...} when it could not run at all."""
    key = _key()
    try:
        cached = json.loads(CACHE.read_text())
        answers = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        answers = {}
    if not refresh and isinstance(answers.get(key), dict):
        return answers[key]
    node = shutil.which("node")
    if node is None:
        return {"error": "node is not on PATH"}
    try:
        proc = subprocess.run([node, str(PROBE)], cwd=REPO, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"node {PROBE} did not finish within {PROBE_TIMEOUT_S:g} s"}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"node {PROBE.relative_to(REPO)} failed (exit {proc.returncode}): {tail or 'no output'}"}
    if answer.get("chromium", {}).get("ok"):
        try:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            # One answer per key (another HARNESS_CHROMIUM_ARGS, another Chromium), the last few kept.
            answers = {k: v for k, v in list(answers.items())[-7:] if k != key}
            CACHE.write_text(json.dumps({**answers, key: answer}, indent=1))
        except OSError:
            pass
    return answer


def doctor_rows(probe_result: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows for Chromium, WebGL and WebGPU, and per browser runtime what the probe found
    ({name: {"available": bool, "reason": str, "fix": str}}), for doctor to fold into its runtime rows.
    The probe runs only where the browser runtimes could run at all (Node and the npm packages there)."""
    chromium = chromium_path()
    rows: list[dict[str, Any]] = []
    covers = ["browser-* runtimes", "report page tests (tests/test_report.py)"]
    if not os.access(chromium, os.X_OK):
        rows.append({"name": "chromium", "kind": "browser", "language": "-", "available": False, "version": None, "formats": covers,
                     "reason": f"Debian's chromium is not installed ({chromium} is missing)", "fix": FIX_CHROMIUM})
        return rows, {}
    runnable = [n for n, s in RUNTIMES.items() if isinstance(s, BrowserRuntime) and s.availability().ok]
    p: dict[str, Any] = probe_result if probe_result is not None else (
        probe() if runnable else {"error": "the browser runtimes' npm packages are not installed"})
    if "error" in p or not p.get("chromium", {}).get("ok"):
        why = p.get("error") or p.get("chromium", {}).get("reason", "unknown")
        rows.append({"name": "chromium", "kind": "browser", "language": "-", "available": not runnable, "version": None, "formats": covers,
                     "reason": f"Chromium at {chromium} could not be started by the browser worker: {why}" if runnable else why,
                     "fix": FIX_CHROMIUM if runnable else "make setup   (runs js/setup.sh)"})
        return rows, {n: {"available": False, "reason": f"Chromium could not be started: {why}", "fix": FIX_CHROMIUM} for n in runnable}
    rows.append({"name": "chromium", "kind": "browser", "language": "-", "available": True, "version": p["chromium"]["version"], "formats": covers,
                 "reason": "", "fix": "", "executable": chromium,
                 "cross_origin_isolated": p.get("cross_origin_isolated"), "clock_resolution_ns": p.get("clock_resolution_ns")})
    gl = p.get("webgl") or {}
    rows.append({"name": "chromium-webgl", "kind": "browser-gpu", "language": "-", "available": bool(gl.get("available")),
                 "version": f"WebGL{gl.get('version')} {gl.get('renderer')} (highp float {gl.get('fragment_highp_float_bits')} bits)"
                 if gl.get("available") else None,
                 "formats": ["browser-tfjs-webgl"], "reason": gl.get("reason", ""), "fix": "" if gl.get("available") else FIX_WEBGL})
    gpu = p.get("webgpu") or {}
    adapter = " ".join(x for x in (gpu.get("vendor"), gpu.get("architecture"), gpu.get("description")) if x)
    rows.append({"name": "chromium-webgpu", "kind": "browser-gpu", "language": "-", "available": bool(gpu.get("available")),
                 "version": f"adapter {adapter}" + (" (fallback adapter: software, SwiftShader)" if gpu.get("fallback") else "")
                 if gpu.get("available") else None,
                 "formats": ["browser-tfjs-webgpu", "browser-ort-webgpu"], "reason": gpu.get("reason", ""),
                 "fix": "" if gpu.get("available") else FIX_WEBGPU})
    found = {}
    for name in runnable:
        r = p.get("runtimes", {}).get(name)
        if r is None:
            found[name] = {"available": False, "reason": "the browser probe did not report it", "fix": "rerun harness doctor"}
        elif not r.get("ok"):
            fix = FIX_WEBGPU if "webgpu" in name else FIX_WEBGL if "webgl" in name else "see the reason; the worker log has the page's console"
            found[name] = {"available": False, "reason": r.get("reason", "unknown"), "fix": fix}
        else:
            found[name] = {"available": True, "reason": "", "fix": "", "precision": r.get("precision")}
    return rows, found

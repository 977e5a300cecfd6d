"""pip-audit over the installed dependencies (issue #9): fail on a known vulnerability.

Audits `pip freeze` of the venv (the project itself, editable, is skipped) against PyPI's
vulnerability data, then OSV. Ignores, each with its reason, live in .ci/audit-ignore.txt.
When neither service can be reached the audit is NOT performed: that is printed loudly and
fails only where MODERATION_AUDIT_REQUIRED=1 (a machine that must reach them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def ignored() -> list[str]:
    path = HERE / "audit-ignore.txt"
    if not path.exists():
        return []
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def audit(requirements: Path, service: str) -> dict[str, object] | None:
    """pip-audit's JSON report, or None when the run itself failed (network, crash)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [
            str(BIN / "pip-audit"),
            "-r",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "-s",
            service,
            "-f",
            "json",
            "-o",
            str(out),
            "--timeout",
            "20",
        ]
        for vuln in ignored():
            cmd += ["--ignore-vuln", vuln]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"pip-audit ({service}) failed: {last[:300]}")
            return None
        report: dict[str, object] = json.loads(out.read_text())
        return report


def main() -> int:
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Local builds (torch's +cpu) are audited as their public release.
    pins = [ln.split("+", 1)[0] for ln in freeze.splitlines() if "==" in ln]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
    requirements = Path(f.name)
    try:
        for service in ("pypi", "osv"):
            report = audit(requirements, service)
            if report is None:
                continue
            deps = report.get("dependencies", [])
            assert isinstance(deps, list)
            audited = [d for d in deps if "skip_reason" not in d]
            if not audited:
                print(f"pip-audit ({service}): no package could be looked up; trying the next")
                continue
            vulnerable = [d for d in audited if d.get("vulns")]
            for d in deps:
                if "skip_reason" in d:
                    print(f"not audited: {d['name']} {d.get('version', '')}: {d['skip_reason']}")
            for d in vulnerable:
                for v in d["vulns"]:
                    fixes = ", ".join(v.get("fix_versions", [])) or "no fix yet"
                    print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in {fixes})")
            print(
                f"pip-audit ({service}): {len(audited)} packages audited, "
                f"{len(vulnerable)} with known vulnerabilities, {len(deps) - len(audited)} skipped"
            )
            return 1 if vulnerable else 0
    finally:
        requirements.unlink()
    print("=" * 78)
    print("DEPENDENCY AUDIT NOT PERFORMED: neither PyPI's vulnerability data nor OSV answered")
    print("from this machine. Run `.venv/bin/python .ci/audit_deps.py` where they can be reached.")
    print("=" * 78)
    return 1 if os.environ.get("MODERATION_AUDIT_REQUIRED") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())

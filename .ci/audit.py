"""Known vulnerabilities of the installed packages (pip-audit); fails when it could not look them up.

pip-audit asks PyPI's JSON API (``/pypi/<name>/<version>/json``) for each installed distribution. A
package it cannot look up (PyPI unreachable, or a mirror without that API) is reported as skipped,
and pip-audit still exits 0 with "No known vulnerabilities found": an audit that checked nothing
would pass. This wrapper fails then, saying why. The project itself, installed editable, is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROJECT = "campaign-engine"


def main() -> int:
    command = [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(f"error: pip-audit failed (exit {done.returncode}):\n{done.stderr.strip()}", file=sys.stderr)
        return 2
    packages = [d for d in report["dependencies"] if d["name"] != PROJECT]
    skipped = [d for d in packages if d.get("skip_reason")]
    vulnerable = [d for d in packages if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            print(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if skipped:
        print(
            f"error: pip-audit could not audit {len(skipped)} of {len(packages)} installed packages, so it "
            "proves nothing; PyPI's JSON API (https://pypi.org/pypi/<name>/<version>/json) must be reachable. "
            f"First: {skipped[0]['skip_reason']}",
            file=sys.stderr,
        )
        return 1
    if vulnerable:
        print(f"error: {len(vulnerable)} installed packages have known vulnerabilities", file=sys.stderr)
        return 1
    print(f"pip-audit: {len(packages)} packages audited, no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())

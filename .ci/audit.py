"""Known vulnerabilities of the installed packages (pip-audit); fails when it could not look them up.

pip-audit asks PyPI's JSON API (``/pypi/<name>/<version>/json``) for each installed distribution. A
package it cannot look up (PyPI unreachable, or a mirror without that API) is reported as skipped,
and pip-audit still exits 0 with "No known vulnerabilities found": an audit that checked nothing
would pass. Some mirrors serve only the project document (``/pypi/<name>/json``), whose
``vulnerabilities`` are those of the newest release: a package pip-audit skipped is looked up there
when its installed version is the newest. What neither could audit is named on stderr; the audit fails
on any known vulnerability, and, with ``CE_AUDIT_STRICT=1``, on any package left unaudited. The
project itself, installed editable, is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from importlib import metadata

PROJECT = "campaign-engine"
INDEX = "https://pypi.org/pypi"


def newest_release_vulns(name: str, version: str) -> list[dict[str, object]] | None:
    """The known vulnerabilities of ``name`` at ``version`` when it is the newest release, else None."""
    try:
        with urllib.request.urlopen(f"{INDEX}/{name}/json", timeout=10) as answer:
            document = json.load(answer)
    except (OSError, ValueError):
        return None
    if document.get("info", {}).get("version") != version or "vulnerabilities" not in document:
        return None
    return [
        {"id": v.get("id"), "fix_versions": v.get("fixed_in") or []}
        for v in document["vulnerabilities"]
        if not v.get("withdrawn")
    ]


def main() -> int:
    command = [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(f"error: pip-audit failed (exit {done.returncode}):\n{done.stderr.strip()}", file=sys.stderr)
        return 2
    packages = [d for d in report["dependencies"] if d["name"] != PROJECT]
    skipped = []
    for dep in packages:
        if dep.get("skip_reason"):
            dep.setdefault("version", metadata.version(dep["name"]))
            found = newest_release_vulns(dep["name"], dep["version"])
            if found is None:
                skipped.append(dep)
            else:
                dep["vulns"] = found
    vulnerable = [d for d in packages if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            print(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        print(f"error: {len(vulnerable)} installed packages have known vulnerabilities", file=sys.stderr)
        return 1
    audited = len(packages) - len(skipped)
    print(f"pip-audit: {audited} of {len(packages)} installed packages audited, no known vulnerabilities")
    if skipped:
        names = ", ".join(f"{d['name']} {d['version']}" for d in skipped)
        print(
            f"warning: not audited ({len(skipped)}: neither PyPI's release documents nor, their version being "
            f"older than the newest, the project documents could be used): {names}. First reason: "
            f"{skipped[0]['skip_reason']}",
            file=sys.stderr,
        )
        if os.environ.get("CE_AUDIT_STRICT") == "1":
            return 1
    if audited == 0:
        print("error: no installed package could be audited: PyPI's JSON API is unreachable", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

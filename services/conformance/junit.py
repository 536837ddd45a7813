"""The results as JUnit XML, for CI systems. Pure."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from services.conformance.result import CheckResult

SUITE = "stekker-conformance"


def junit_xml(
    results: Sequence[CheckResult], *, member: str, timestamp: dt.datetime | None = None
) -> str:
    """One `testsuite` named stekker-conformance, one `testcase` per check; a failed
    check has a `failure` element whose message is the reason."""
    failures = sum(1 for r in results if not r.passed)
    total_time = f"{sum(r.duration_s for r in results):.3f}"
    root = ET.Element("testsuites", name=SUITE, tests=str(len(results)),
                      failures=str(failures), errors="0", time=total_time)
    suite = ET.SubElement(
        root, "testsuite", name=SUITE, tests=str(len(results)), failures=str(failures),
        errors="0", skipped="0", time=total_time,
        timestamp=(timestamp or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="member", value=member)
    for result in results:
        case = ET.SubElement(suite, "testcase", classname=f"{SUITE}.{member}",
                             name=result.check, time=f"{result.duration_s:.3f}")
        if result.passed:
            ET.SubElement(case, "system-out").text = result.detail
        else:
            failure = ET.SubElement(case, "failure", message=result.detail,
                                    type="ConformanceFailure")
            failure.text = result.detail
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

"""Machine formats of `check` results: JSON, JUnit XML, GitHub workflow commands, SARIF 2.1.0.

Each function takes the list of `FileResult` and returns the whole document as a string. No rich here: these
outputs must never carry colour or wrapping. Strings from files pass the output boundary (`text_safety`): JSON keeps
them exact (`json_safe`); JUnit, GitHub and SARIF show them with `visible` (one line, no control characters, only
characters XML 1.0 allows).
"""
from __future__ import annotations

import os
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

from .. import __version__
from ..analysis.check import ERROR, RULES, FileResult, Finding, summary
from ..text_safety import dumps, visible

CHECK_SCHEMA_VERSION = 1
INFORMATION_URI = "https://github.com/lstm-inspect/lstm-inspect/blob/main/docs/check.md"


def _where(finding: Finding) -> str:
    return visible("/".join(p for p in (finding.layer, finding.block) if p))


def _line(finding: Finding) -> str:
    where = _where(finding)
    return f"{where}: {visible(finding.message)}" if where else visible(finding.message)


def to_json(results: list[FileResult], rules: list[str], strict: bool) -> str:
    doc = {
        "schema_version": CHECK_SCHEMA_VERSION,
        "tool": f"lstm-inspect {__version__}",
        "strict": strict,
        "rules": rules,
        "summary": summary(results),
        "files": [r.as_dict() for r in results],
    }
    return dumps(doc)


def to_junit(results: list[FileResult], rules: list[str], strict: bool) -> str:
    """One <testsuite> per file, one <testcase> per file and rule (plus ``read`` for a file that cannot be
    read). A failing error-level rule is a <failure>; warnings are listed in <system-out> and fail only with
    --strict."""
    root = ET.Element("testsuites", name="lstm-inspect check", tests="0", failures="0", errors="0")
    total = failures = errors = 0
    for result in results:
        path = visible(result.path)
        suite = ET.SubElement(root, "testsuite", name=path)
        s_tests = s_fail = s_err = 0
        if result.error:
            case = ET.SubElement(suite, "testcase", classname=path, name="read")
            error = visible(result.error)
            ET.SubElement(case, "error", message=error, type="read-error").text = error
            s_tests, s_err = 1, 1
        else:
            for rule_id in rules:
                found = [f for f in result.findings if f.rule == rule_id]
                case = ET.SubElement(suite, "testcase", classname=path, name=rule_id)
                s_tests += 1
                failing = [f for f in found if f.severity == ERROR or strict]
                if failing:
                    s_fail += 1
                    text = "\n".join(f"[{f.severity}] {_line(f)}" for f in found)
                    ET.SubElement(case, "failure", message=_line(failing[0]), type=rule_id).text = text
                elif found:
                    ET.SubElement(case, "system-out").text = "\n".join(f"[{f.severity}] {_line(f)}" for f in found)
        suite.set("tests", str(s_tests))
        suite.set("failures", str(s_fail))
        suite.set("errors", str(s_err))
        total, failures, errors = total + s_tests, failures + s_fail, errors + s_err
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _gh_data(text: str) -> str:
    """A workflow command's message: `visible` (so no line break of any kind can start a new command), then the
    runner's own escapes."""
    return visible(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(results: list[FileResult], rules: list[str], strict: bool) -> str:
    """GitHub Actions workflow commands: ``::error file=F,title=RULE::message`` per finding and unreadable file."""
    lines = []
    for result in results:
        if result.error:
            lines.append(f"::error file={_gh_property(result.path)},title=read-error::{_gh_data(result.error)}")
        for f in result.findings:
            level = "error" if f.severity == ERROR or strict else "warning"
            title = f"lstm-inspect {f.rule}"
            lines.append(f"::{level} file={_gh_property(result.path)},title={_gh_property(title)}::"
                         f"{_gh_data(_line(f))}")
    return "\n".join(lines) + ("\n" if lines else "")


def _uri(path: str) -> str:
    rel = os.path.relpath(path) if not os.path.isabs(path) or path.startswith(os.getcwd()) else path
    # The path's own bytes, percent-encoded: a file name that is not UTF-8 (surrogate-escaped by Python) still
    # names its file.
    rel = os.fsencode(rel.replace(os.sep, "/"))
    if os.path.isabs(rel):
        return "file://" + urllib.parse.quote(rel)
    return urllib.parse.quote(rel)


def to_sarif(results: list[FileResult], rules: list[str], strict: bool) -> str:
    """A SARIF 2.1.0 log with one run; rules carry their default level, results the level they were raised at."""
    rule_index = {rule_id: i for i, rule_id in enumerate(rules)}
    descriptors = []
    for rule_id in rules:
        rule = RULES[rule_id]
        descriptor: dict[str, Any] = {
            "id": rule.id,
            "name": "".join(part.capitalize() for part in rule.id.split("-")),
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": rule.severity},
            "helpUri": f"{INFORMATION_URI}#{rule.id}",
        }
        if rule.why:
            descriptor["fullDescription"] = {"text": rule.why}
        descriptors.append(descriptor)
    sarif_results = []
    notifications = []
    for result in results:
        location = {"physicalLocation": {"artifactLocation": {"uri": _uri(result.path)}}}
        if result.error:
            notifications.append({"level": "error",
                                  "message": {"text": f"{visible(result.path)}: {visible(result.error)}"},
                                  "locations": [location]})
            continue
        for f in result.findings:
            loc: dict[str, Any] = {"physicalLocation": location["physicalLocation"]}
            if f.layer or f.block:
                loc["logicalLocations"] = [{"fullyQualifiedName": _where(f), "kind": "member"}]
            entry: dict[str, Any] = {
                "ruleId": f.rule,
                "level": "error" if f.severity == ERROR or strict else "warning",
                "message": {"text": _line(f)},
                "locations": [loc],
            }
            if f.rule in rule_index:
                entry["ruleIndex"] = rule_index[f.rule]
            sarif_results.append(entry)
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "lstm-inspect", "version": __version__, "informationUri": INFORMATION_URI,
                                "rules": descriptors}},
            "invocations": [{"executionSuccessful": not notifications,
                             "toolExecutionNotifications": notifications}],
            "results": sarif_results,
        }],
    }
    return dumps(log)


FORMATTERS = {"json": to_json, "junit": to_junit, "github": to_github, "sarif": to_sarif}

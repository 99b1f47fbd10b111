"""docs/security.md's table of attacks and faults names tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security.md"
HEADING = "## Attacks and faults tested"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def table_nodes() -> list[tuple[str, str]]:
    text = SECURITY.read_text(encoding="utf-8")
    assert text.count(HEADING) == 1
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    return NODE.findall(section)


def test_every_test_named_in_the_table_exists() -> None:
    nodes = table_nodes()
    assert len(nodes) > 50
    missing = []
    for path, name in nodes:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        functions = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_the_documented_policy_example_is_valid() -> None:
    from plugin.security.policy import TenantPolicy

    text = SECURITY.read_text(encoding="utf-8")
    section = text.split("### Tenant policy", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = TenantPolicy.parse(example)
    rule = policy.rule_for("team-a")
    assert rule is not None and rule.allows_path("kv/data/team-a/db")
    assert not rule.allows_path("kv/data/platform/db")
    platform = policy.rule_for("platform-core")
    assert platform is not None and platform.env_allowed("AVP_KV_VERSION")
    assert policy.rule_for("other") is None

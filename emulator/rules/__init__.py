"""The emulator's security rules engine: load a Realtime Database rules file once, then answer read/write checks.

Design: loading (`RuleSet.from_text` / `from_json`) walks the rules tree into `_Node` objects, one per rules
location, with literal children, at most one `$wildcard` child and precomputed facts (is there a `.validate`
anywhere below?). Each `.read`/`.write`/`.validate` string goes through a hand-written lexer and Pratt parser
(`_expr.py`, no `eval`), then a static checker that refuses what Firebase refuses at deploy time (a non-boolean
rule, `;`, unknown variables, methods or `query` members, wrong literal argument types, `newData` in `.read`,
misplaced regex anchors), and is compiled into nested closures. A request then only walks the nodes along its
path and calls those closures with a small `Context`; a run-time error inside a rule (a method on null, `'a' - 1`,
`root.parent()`) raises internally and makes that rule false. Every parse problem is a `RulesParseError` whose
message starts with "Parse error" and names the rule's location (`/rules/users/$uid/.write`) and the column.
"""

from ._ruleset import RuleSet, RulesParseError

__all__ = ["RuleSet", "RulesParseError"]

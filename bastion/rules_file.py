"""The rules file: read, checked, and swapped in only when valid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bastion.config import read_toml
from bastion.core.rules import RuleSet, parse_rules


def load_rules(path: Path) -> RuleSet:
    """Read a rules file; every mistake names the file, the line and what is wrong."""
    data, text = read_toml(path, "rules")
    return parse_rules(data, path=path, text=text)


@dataclass
class RulesHolder:
    """The rules in force; `reload` and `use` swap them only when the new file is valid."""

    rules: RuleSet = field(default_factory=RuleSet)
    path: Path | None = None

    def reload(self) -> RuleSet:
        if self.path is not None:
            self.rules = load_rules(self.path)
        return self.rules

    def use(self, path: Path | None) -> RuleSet:
        """The rules of `path` from now on (none: no rules file, no screening)."""
        self.rules = load_rules(path) if path is not None else RuleSet()
        self.path = path
        return self.rules

"""The built-in simulator provider (see `provider` for the number table)."""

from app.providers.simulator.provider import RULES, Behaviour, Rule, SimulatorProvider, rule_for

__all__ = ["RULES", "Behaviour", "Rule", "SimulatorProvider", "rule_for"]

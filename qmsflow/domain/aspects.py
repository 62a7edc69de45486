"""The thirteen aspects of a QMS under EU AI Act Art. 17(1)(a)-(m)."""

ASPECTS: dict[str, str] = {
    "a": "Regulatory compliance strategy, incl. conformity assessment and management of modifications",
    "b": "Design, design control and design verification",
    "c": "Development, quality control and quality assurance",
    "d": "Examination, test and validation before, during and after development, with their frequency",
    "e": "Technical specifications and standards applied",
    "f": "Data management",
    "g": "Risk management system (Art. 9)",
    "h": "Post-market monitoring system (Art. 72)",
    "i": "Serious-incident reporting (Art. 73)",
    "j": "Communication with authorities, notified bodies, operators, customers and others",
    "k": "Record-keeping of all relevant documentation",
    "l": "Resource management, incl. security of supply",
    "m": "Accountability framework for management and staff",
}


def uncovered(covered: set[str]) -> list[str]:
    """Aspect letters that no process covers, in order."""
    return [letter for letter in ASPECTS if letter not in covered]

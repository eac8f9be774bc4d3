"""Who is acting. Identity comes from the host; the engine records it, never checks it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from complaintflow.errors import FieldProblem, InvalidInput

__all__ = ["Actor"]


@dataclass(frozen=True)
class Actor:
    """A person (or system) acting on complaints, with the roles the host vouches for."""

    id: str
    roles: tuple[str, ...]
    department: str | None = None

    def __init__(self, id: str, roles: tuple[str, ...] | list[str] | frozenset[str] | str,
                 department: str | None = None) -> None:
        if isinstance(roles, str):
            roles = (roles,)
        listed: Any = roles
        if not isinstance(listed, tuple | list | frozenset | set) \
                or not all(isinstance(r, str) for r in listed):
            raise InvalidInput([FieldProblem("actor.roles", "a list of role ids (text), not "
                                             f"{listed!r:.80}")], context="actor")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "roles", tuple(sorted(set(roles))))
        object.__setattr__(self, "department", department)

    def has_any(self, roles: tuple[str, ...] | list[str] | frozenset[str]) -> bool:
        return any(r in self.roles for r in roles)

"""Authorization: roles (any of), scopes (all of), claims (equality). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .model import Code, Identity

__all__ = ["Requirement"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a rule's ``require`` table asks of a verified identity.

    >>> Requirement(roles=frozenset({"admin"})).check(Identity("u", roles=("user",)))
    <Code.FORBIDDEN: 'forbidden'>
    """

    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    claims: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def build(
        cls,
        roles: Sequence[str] = (),
        scopes: Sequence[str] = (),
        claims: dict[str, Any] | None = None,
    ) -> Requirement:
        return cls(frozenset(roles), frozenset(scopes), tuple((claims or {}).items()))

    @property
    def empty(self) -> bool:
        return not (self.roles or self.scopes or self.claims)

    def check(self, identity: Identity) -> Code | None:
        """None when ``identity`` satisfies the requirement, else the denial code."""
        if self.roles and self.roles.isdisjoint(identity.roles):
            return Code.FORBIDDEN
        for name, expected in self.claims:
            value = identity.claims.get(name, _MISSING)
            # bool is an int in Python: True must not equal a required 1.
            if value is _MISSING or type(value) is not type(expected) or value != expected:
                return Code.FORBIDDEN
        if self.scopes and not self.scopes.issubset(identity.scopes):
            return Code.INSUFFICIENT_SCOPE
        return None


_MISSING: Final = object()

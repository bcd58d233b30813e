"""StrConstants: a closed set of string constants, as a StrEnum is, without enum.

enum (with the functools and collections it imports) costs ~4 ms of every zoned command on
this host; the two sets zoned's start-up path needs (zoned.child.sync.Op and
zoned.oci.status.Status) need only this much of it.
"""
from __future__ import annotations


class _Members(type):
    """Iterating a subclass, as an Enum, gives its members in the order they were
    written."""

    def __iter__(cls):
        return iter(cls._members.values())

    def __len__(cls) -> int:
        return len(cls._members)


class StrConstants(str, metaclass=_Members):
    """Each UPPER_CASE str attribute of a subclass becomes an instance of it; Sub(value)
    returns that instance (so `is` works, as with an Enum) or raises ValueError; `for m in
    Sub` gives them in order. An instance compares, hashes, formats and serialises as its
    string."""

    __slots__ = ()
    _members: dict[str, StrConstants] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._members = {}
        for name, value in list(vars(cls).items()):
            if name.isupper() and type(value) is str:
                member = str.__new__(cls, value)
                setattr(cls, name, member)
                cls._members[value] = member

    def __new__(cls, value: object) -> StrConstants:
        try:
            return cls._members[value]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a valid {cls.__name__}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"

    @property
    def value(self) -> str:
        return str.__str__(self)

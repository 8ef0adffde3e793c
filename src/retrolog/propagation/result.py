"""The result types of :func:`propagate`: placements, refusals, errors."""

from __future__ import annotations

from ..errors import RetrologError


class PropagationError(RetrologError):
    """A statement could not be propagated; ``reason`` says why, ``line`` which one."""

    exit_code = 3  # as `retrolog propagate` when it refuses

    def __init__(self, reason: str, line: int | None = None, code: str = "no-context") -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.code = code


class _Frozen:
    """Immutable record: fields set once in ``__init__``, compared and shown by value.

    (Hand-written rather than a dataclass: importing ``dataclasses`` pulls in ``inspect``,
    and ``retrolog propagate`` must start fast.)
    """

    __slots__: tuple[str, ...] = ()

    def _init(self, **values: object) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(repr(getattr(self, n)) for n in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Placement(_Frozen):
    """Where one statement went in the old version.

    ``new_line``: the line asked for in the new file.  ``kind``: ``"insert"``, ``"wrap"``
    (an existing expression wrapped in ``retrolog.log``) or ``"present"`` (already there,
    nothing changed).  ``line``: first line of the statement itself in the returned source
    (inside the inserted block when one was lifted with it; the rewritten line for ``wrap``,
    the existing line for ``present``).  ``after_line``: the
    old-file line it was inserted after (0 = top of file; the rewritten old line for
    ``wrap``).  ``scope``: enclosing functions and compound statements in the old file,
    outermost first, e.g. ``("train", "for epoch", "for batch")``.  ``anchor``: the old
    statement it follows (its first line, stripped), ``None`` at the start of a block.
    ``lines``: lines inserted.  ``renames``: identifiers renamed in it (new -> old name).
    ``lifted``: the new enclosing ``if``/``with`` inserted along with it, if any.
    """

    __slots__ = (
        "new_line",
        "kind",
        "line",
        "after_line",
        "scope",
        "anchor",
        "lines",
        "confidence",
        "renames",
        "lifted",
        "warnings",
    )
    new_line: int
    kind: str
    line: int
    after_line: int
    scope: tuple[str, ...]
    anchor: str | None
    lines: int
    confidence: float
    renames: dict[str, str]
    lifted: str | None
    warnings: tuple[str, ...]

    def __init__(
        self,
        *,
        new_line: int,
        kind: str,
        line: int,
        after_line: int,
        scope: tuple[str, ...],
        anchor: str | None,
        lines: int,
        confidence: float,
        renames: dict[str, str] | None = None,
        lifted: str | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        self._init(
            new_line=new_line,
            kind=kind,
            line=line,
            after_line=after_line,
            scope=tuple(scope),
            anchor=anchor,
            lines=lines,
            confidence=confidence,
            renames=dict(renames or {}),
            lifted=lifted,
            warnings=tuple(warnings),
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        return {
            "new_line": self.new_line,
            "kind": self.kind,
            "line": self.line,
            "after_line": self.after_line,
            "scope": list(self.scope),
            "anchor": self.anchor,
            "lines": self.lines,
            "confidence": self.confidence,
            "renames": dict(self.renames),
            "lifted": self.lifted,
            "warnings": list(self.warnings),
        }


class Propagation(_Frozen):
    """The outcome of :func:`propagate`.

    ``source``: the old source with the statements inserted (the old source unchanged when
    refused or when every statement was already present).  ``placements``: one per statement.
    ``renames``: identifier as written in the new file -> identifier used in the old file
    (``"self.model" -> "self.net"`` for attributes).  ``confidence``: the lowest placement
    confidence, in [0, 1].  ``refused``: the reason, or ``None``; ``refused_line`` names the
    statement and ``refusal_code`` classifies the reason (``no-context``, ``no-statement``,
    ``parse-error``, ``single-line-block``, ``no-expression``, ``bad-result``,
    ``low-confidence``; a ``low-confidence`` refusal keeps ``confidence`` and ``warnings``).  ``imports``:
    import lines added (after the old file's last top-level import) because the statement
    uses a name the new file imports and the old file never binds.
    """

    __slots__ = (
        "source",
        "placements",
        "renames",
        "confidence",
        "refused",
        "refused_line",
        "refusal_code",
        "warnings",
        "imports",
    )
    source: str
    placements: tuple[Placement, ...]
    renames: dict[str, str]
    confidence: float
    refused: str | None
    refused_line: int | None
    refusal_code: str | None
    warnings: tuple[str, ...]
    imports: tuple[str, ...]

    def __init__(
        self,
        *,
        source: str,
        placements: tuple[Placement, ...] = (),
        renames: dict[str, str] | None = None,
        confidence: float = 0.0,
        refused: str | None = None,
        refused_line: int | None = None,
        refusal_code: str | None = None,
        warnings: tuple[str, ...] = (),
        imports: tuple[str, ...] = (),
    ) -> None:
        self._init(
            source=source,
            placements=tuple(placements),
            renames=dict(renames or {}),
            confidence=confidence,
            refused=refused,
            refused_line=refused_line,
            refusal_code=refusal_code,
            warnings=tuple(warnings),
            imports=tuple(imports),
        )

    @property
    def ok(self) -> bool:
        """Whether every statement was placed."""
        return self.refused is None

    @property
    def placement(self) -> Placement | None:
        """The first placement (the only one for a single line)."""
        return self.placements[0] if self.placements else None

    def raise_if_refused(self) -> Propagation:
        """Return ``self``, or raise :class:`PropagationError` if the propagation was refused."""
        if self.refused is not None:
            raise PropagationError(self.refused, self.refused_line, self.refusal_code or "")
        return self

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary (without the source text)."""
        return {
            "ok": self.ok,
            "refused": self.refused,
            "refused_line": self.refused_line,
            "refusal_code": self.refusal_code,
            "confidence": self.confidence,
            "renames": dict(self.renames),
            "placements": [p.to_dict() for p in self.placements],
            "imports": list(self.imports),
            "warnings": list(self.warnings),
        }

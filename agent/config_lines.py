"""Where each key of a TOML text is written: its line, for error messages that point into the file.

The text has already parsed as TOML; this scan only has to find tables (`[a.b]`), entries of arrays of tables
(`[[a.b]]`, numbered as pydantic numbers them), keys (dotted ones too) and skip values that run over several lines
(arrays, inline tables, multi-line strings).
"""

from __future__ import annotations

KeyPath = tuple[str | int, ...]
_QUOTES = ('"', "'")


def _split_key(text: str) -> tuple[str, ...]:
    """`a."b.c".d` -> ("a", "b.c", "d")."""
    parts: list[str] = []
    current, quote = "", ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                current += char
        elif char in _QUOTES:
            quote = char
        elif char == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return tuple(parts)


class _ValueScan:
    """Follows a value across lines: open brackets and multi-line strings mean the next line continues it."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline = ""  # '"""' or "'''" while inside one

    @property
    def open(self) -> bool:
        return self.depth > 0 or bool(self.multiline)

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self.multiline:
                end = text.find(self.multiline, i)
                if end < 0:
                    return
                self.multiline, i = "", end + 3
                continue
            char = text[i]
            if text.startswith(('"""', "'''"), i):
                self.multiline, i = text[i : i + 3], i + 3
                continue
            if char in _QUOTES:
                i = self._skip_string(text, i)
                continue
            if char == "#":
                return
            self.depth += char in "[{"
            self.depth -= char in "]}"
            i += 1

    @staticmethod
    def _skip_string(text: str, start: int) -> int:
        quote, i = text[start], start + 1
        while i < len(text) and text[i] != quote:
            i += 2 if quote == '"' and text[i] == "\\" else 1
        return i + 1


class _Tables:
    """The table the following keys belong to, with the current index of every array of tables."""

    def __init__(self) -> None:
        self.current: KeyPath = ()
        self.entries: dict[tuple[str, ...], int] = {}  # array of tables (by name) -> index of its last entry

    def resolve(self, name: tuple[str, ...]) -> KeyPath:
        """A header's name as pydantic locates it: each array of tables on the way carries its current index."""
        path: list[str | int] = []
        for n in range(1, len(name) + 1):
            path.append(name[n - 1])
            if name[:n] in self.entries:
                path.append(self.entries[name[:n]])
        return tuple(path)

    def enter(self, name: tuple[str, ...], *, array: bool) -> KeyPath:
        if array:
            parent = self.resolve(name[:-1])
            self.entries[name] = self.entries.get(name, -1) + 1
            self.entries = {k: v for k, v in self.entries.items() if k[: len(name)] != name or k == name}
            self.current = (*parent, name[-1], self.entries[name])
        else:
            self.current = self.resolve(name)
        return self.current


def key_lines(text: str) -> dict[KeyPath, int]:
    """Line number (from 1) of every table, array-of-tables entry and key of a valid TOML text."""
    found: dict[KeyPath, int] = {}
    tables, value = _Tables(), _ValueScan()
    for number, raw in enumerate(text.splitlines(), start=1):
        if value.open:
            value.feed(raw)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            path = tables.enter(_split_key(line[2 : line.index("]]")]), array=True)
            found.setdefault(path[:-1], number)
            found[path] = number
        elif line.startswith("["):
            found[tables.enter(_split_key(line[1 : line.index("]")]), array=False)] = number
        else:
            key, _, rest = line.partition("=")
            path = (*tables.current, *_split_key(key))
            for n in range(len(tables.current) + 1, len(path) + 1):
                found.setdefault(path[:n], number)
            value.feed(rest)
    return found


def line_of(lines: dict[KeyPath, int], loc: KeyPath) -> int | None:
    """The line of `loc`, or of the nearest enclosing key or table written in the file (None: none is)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None

"""Linux key codes -> characters on a fixed US layout, so an HID scanner reads the same whatever the host's keymap.

A keyboard-wedge scanner sends key presses, not characters; read through the console they are translated by the
host's layout (a German layout swaps Y and Z and moves '-'). Grabbed through evdev, they are translated here. Codes
are those of linux/input-event-codes.h (tests check them against evdev's table).
"""

from __future__ import annotations

from enum import IntEnum

from agent.scanners.lines import MAX_SN_LINE

KEY_DOWN = 1  # evdev key event values: 0 up, 1 down, 2 autorepeat (ignored: a scanner does not hold keys)
KEY_UP = 0


class Key(IntEnum):
    """The key codes that matter besides the printable ones."""

    ENTER = 28
    KPENTER = 96
    TAB = 15
    LEFTSHIFT = 42
    RIGHTSHIFT = 54
    CAPSLOCK = 58


# code: (unshifted, shifted)
US_LAYOUT: dict[int, tuple[str, str]] = {
    2: ("1", "!"), 3: ("2", "@"), 4: ("3", "#"), 5: ("4", "$"), 6: ("5", "%"), 7: ("6", "^"), 8: ("7", "&"),
    9: ("8", "*"), 10: ("9", "("), 11: ("0", ")"), 12: ("-", "_"), 13: ("=", "+"),
    16: ("q", "Q"), 17: ("w", "W"), 18: ("e", "E"), 19: ("r", "R"), 20: ("t", "T"), 21: ("y", "Y"), 22: ("u", "U"),
    23: ("i", "I"), 24: ("o", "O"), 25: ("p", "P"), 26: ("[", "{"), 27: ("]", "}"),
    30: ("a", "A"), 31: ("s", "S"), 32: ("d", "D"), 33: ("f", "F"), 34: ("g", "G"), 35: ("h", "H"), 36: ("j", "J"),
    37: ("k", "K"), 38: ("l", "L"), 39: (";", ":"), 40: ("'", '"'), 41: ("`", "~"), 43: ("\\", "|"),
    44: ("z", "Z"), 45: ("x", "X"), 46: ("c", "C"), 47: ("v", "V"), 48: ("b", "B"), 49: ("n", "N"), 50: ("m", "M"),
    51: (",", "<"), 52: (".", ">"), 53: ("/", "?"), 57: (" ", " "),
    # The keypad, which some scanners use for digits (Num Lock is assumed on: a scanner has no other use for it).
    55: ("*", "*"), 71: ("7", "7"), 72: ("8", "8"), 73: ("9", "9"), 74: ("-", "-"), 75: ("4", "4"), 76: ("5", "5"),
    77: ("6", "6"), 78: ("+", "+"), 79: ("1", "1"), 80: ("2", "2"), 81: ("3", "3"), 82: ("0", "0"), 83: (".", "."),
    98: ("/", "/"),
}  # fmt: skip
LINE_ENDS = frozenset({Key.ENTER, Key.KPENTER, Key.TAB})
SHIFTS = frozenset({Key.LEFTSHIFT, Key.RIGHTSHIFT})
UNKNOWN_KEY = b"\x00"  # a key with no character makes its line unreadable (refused), never silently shorter


class KeyDecoder:
    """Key events -> whole lines of bytes; Shift and Caps Lock are tracked, other modifiers make a line garbage."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._shift = 0
        self._caps = False

    def feed(self, code: int, value: int) -> bytes | None:
        """One key event; the line it ends, if it ends one (Enter, keypad Enter or Tab)."""
        if code in SHIFTS:
            if value == KEY_DOWN:
                self._shift += 1
            elif value == KEY_UP:
                self._shift = max(0, self._shift - 1)
            return None
        if value != KEY_DOWN:
            return None
        if code == Key.CAPSLOCK:
            self._caps = not self._caps
            return None
        if code in LINE_ENDS:
            line, self._line = bytes(self._line), bytearray()
            return line
        if len(self._line) <= MAX_SN_LINE:  # past it the line is refused as over-long; memory stays bounded
            self._line += self._char(code)
        return None

    def _char(self, code: int) -> bytes:
        pair = US_LAYOUT.get(code)
        if pair is None:
            return UNKNOWN_KEY
        plain, shifted = pair
        upper = bool(self._shift) != (self._caps and plain.isalpha())
        return (shifted if upper else plain).encode("ascii")

"""A fake libgpiod for tests: gpiod's own settings, enums, ``LineInfo`` and ``EdgeEvent``, a real pollable fd,
and a timestamped history of pin levels.

``FakeGpio`` is a ``hw.gpio.GpioBackend``, so ``GpiodTargetLines`` and ``GpiodButton`` run on it
unchanged. It behaves as the kernel does where our code could tell: lines are exclusive (EBUSY, with the
holder in ``LineInfo.consumer``), a chip can refuse access (EACCES), invalid flag combinations fail
(EINVAL), values are logical (``active_low`` maps them to the pin), and inputs are debounced like the
kernel's emulation: every edge restarts a debounce timer, and when it fires the settled level is reported
if it changed. So chatter collapses into one event, a glitch shorter than the period into none, and
every event arrives one period after the last bounce.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import gpiod
from gpiod.line import Bias, Clock, Direction, Drive, Edge, Value

from mcu_updater.hw.gpio import GpioChip, GpioRequest


class Level(NamedTuple):
    """One entry of the output history: the pin as a scope would see it after an output was set."""

    time: float
    """``time.monotonic()`` (the event loop's clock)."""
    line: str
    level: int
    """Physical level: 0 or 1. A released open-drain pin reads 1 (the target's pull-up)."""
    drive: Drive

    @property
    def driven(self) -> bool:
        """Whether the chip drives the pin (an open-drain output only ever drives it low)."""
        return _drives(self.drive, self.level)


def _drives(drive: Drive, level: int) -> bool:
    return drive is Drive.PUSH_PULL or level == (0 if drive is Drive.OPEN_DRAIN else 1)


class FakeLine:
    """One pin: what the outside world puts on it, and our request's view of it."""

    def __init__(self, chip: FakeChip, offset: int, name: str) -> None:
        self.chip = chip
        self.offset = offset
        self.name = name
        self.key = name or f"{chip.label}:{offset}"
        """How the history and the stimulus methods name the line."""
        self.external = 1
        """The level the outside world gives the pin when the chip does not drive it (pull-ups, idle
        button)."""
        self.consumer = ""
        """Who holds the line; "" when free."""
        self.settings: gpiod.LineSettings | None = None
        self.request: FakeRequest | None = None
        self.value = Value.INACTIVE
        """The logical output value."""
        self.settled = False
        """The logical input level the debouncer last reported."""
        self.line_seqno = 0
        self.debounce_timer: asyncio.TimerHandle | None = None

    @property
    def level(self) -> int:
        """The physical level on the pin."""
        settings = self.settings
        if settings is not None and settings.direction is Direction.OUTPUT:
            out = int(bool(self.value)) ^ settings.active_low
            if _drives(settings.drive, out):
                return out
        return self.external

    @property
    def logical(self) -> bool:
        return bool(self.level ^ (self.settings is not None and self.settings.active_low))

    def info(self) -> gpiod.LineInfo:
        """The kernel's view, built as the bindings build it (from raw enum values)."""
        settings = self.settings or gpiod.LineSettings(direction=Direction.INPUT)
        return gpiod.LineInfo(
            self.offset,
            self.name,
            bool(self.consumer),
            self.consumer,
            settings.direction.value,
            settings.active_low,
            settings.bias.value,
            settings.drive.value,
            settings.edge_detection.value,
            settings.event_clock.value,
            bool(settings.debounce_period),
            int(settings.debounce_period.total_seconds() * 1_000_000),
        )


class FakeChip:
    """A GPIO chip device: path, label, line names; ``busy`` maps lines to the programs holding them,
    ``denied`` makes every open fail with EACCES."""

    def __init__(
        self,
        path: str,
        label: str,
        names: Sequence[str] | int,
        *,
        busy: Mapping[str | int, str] | None = None,
        denied: bool = False,
    ) -> None:
        """``names``: one per line ("" for an unnamed line), or a count of unnamed lines."""
        self.path = path
        self.label = label
        self.denied = denied
        names = [""] * names if isinstance(names, int) else names
        self.lines = [FakeLine(self, offset, name) for offset, name in enumerate(names)]
        for line, consumer in (busy or {}).items():
            self.lines[self.offset(line)].consumer = consumer

    def offset(self, line: str | int) -> int:
        """``gpiod.Chip.line_offset_from_id``: a name first, else a number."""
        if isinstance(line, str):
            for candidate in self.lines:
                if candidate.name == line:
                    return candidate.offset
            if not line.isdigit():
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            line = int(line)
        if not 0 <= line < len(self.lines):
            raise ValueError("line offset of out range")
        return line


class FakeGpio:
    """A set of fake chips, the output history, and the hands that press buttons."""

    def __init__(self, *chips: FakeChip) -> None:
        self.chips = {chip.path: chip for chip in chips}
        self.history: list[Level] = []
        """Every output change, in order, from the initial values in the request on."""
        self.open_chips = 0
        """Chip handles not closed yet (requests do not need them open)."""
        self.wires: dict[str, Callable[[int], None]] = {}
        """What a pin is wired to (by history key): called with its physical level whenever a request
        drives it or lets it go."""

    # --- hw.gpio.GpioBackend ----------------------------------------------------------------------

    def chip_paths(self) -> list[str]:
        return sorted(self.chips, key=lambda path: (len(path), path))

    def open_chip(self, path: str) -> GpioChip:
        chip = self.chips.get(path)
        if chip is None or chip.denied:
            code = errno.ENOENT if chip is None else errno.EACCES
            raise OSError(code, os.strerror(code), path)
        return _ChipHandle(self, chip)

    def wired(self, line: FakeLine) -> None:
        """Tell what ``line`` is wired to about its level."""
        wire = self.wires.get(line.key)
        if wire is not None:
            wire(line.level)

    # --- the test's side ----------------------------------------------------------------------------

    def line(self, key: str) -> FakeLine:
        """A line by its history key (its name, or ``label:offset``)."""
        for chip in self.chips.values():
            for line in chip.lines:
                if line.key == key:
                    return line
        raise KeyError(key)

    def set_level(self, key: str, level: int) -> None:
        """The outside world puts ``level`` on an undriven pin (a button contact, a pull resistor)."""
        line = self.line(key)
        if line.external == level:
            return
        line.external = level
        settings = line.settings
        if settings is None or settings.edge_detection is Edge.NONE:
            return
        period = settings.debounce_period.total_seconds()
        if not period:
            _settle(line)
            return
        # mod_delayed_work in the kernel: every edge pushes the report back by a full period.
        if line.debounce_timer is not None:
            line.debounce_timer.cancel()
        line.debounce_timer = asyncio.get_running_loop().call_later(period, _settle, line)

    async def bounce(self, key: str, toggles: int, *, spacing: float = 0.001) -> None:
        """Chatter: flip the pin ``toggles`` times, ``spacing`` seconds apart (odd leaves it flipped)."""
        for index in range(toggles):
            if index:
                await asyncio.sleep(spacing)
            self.set_level(key, 1 - self.line(key).external)

    async def press(self, key: str, *, hold: float = 0.05, bounces: int = 0) -> None:
        """Close the button's contact (the pin leaves the idle level its bias gives it), hold it, open it
        again; the contact bounces ``bounces`` times on closing and on opening."""
        for transition in range(2):
            if transition:
                await asyncio.sleep(hold)
            await self.bounce(key, 2 * bounces + 1)


def _settle(line: FakeLine) -> None:
    """The debounce timer fired: report the settled level if it changed and its edge is wanted."""
    line.debounce_timer = None
    settings, request = line.settings, line.request
    if settings is None or request is None or line.logical == line.settled:
        return
    line.settled = line.logical
    wanted = Edge.RISING if line.settled else Edge.FALLING
    if settings.edge_detection in (wanted, Edge.BOTH):
        request.emit(
            line, gpiod.EdgeEvent.Type.RISING_EDGE if line.settled else gpiod.EdgeEvent.Type.FALLING_EDGE
        )


class _ChipHandle:
    """An open chip (``gpiod.Chip``)."""

    def __init__(self, gpio: FakeGpio, chip: FakeChip) -> None:
        self._gpio = gpio
        self._chip: FakeChip | None = chip
        gpio.open_chips += 1

    def _open(self) -> FakeChip:
        if self._chip is None:
            raise gpiod.ChipClosedError()
        return self._chip

    @property
    def path(self) -> str:
        return self._open().path

    def get_info(self) -> gpiod.ChipInfo:
        chip = self._open()
        return gpiod.ChipInfo(Path(chip.path).name, chip.label, len(chip.lines))

    def line_offset_from_id(self, id: str | int, /) -> int:
        return self._open().offset(id)

    def get_line_info(self, line: int | str, /) -> gpiod.LineInfo:
        chip = self._open()
        return chip.lines[chip.offset(line)].info()

    def request_lines(
        self,
        config: dict[Iterable[int | str] | int | str, gpiod.LineSettings | None],
        consumer: str | None = None,
    ) -> GpioRequest:
        chip = self._open()
        wanted: dict[int, gpiod.LineSettings] = {}
        for key, settings in config.items():
            for line in [key] if isinstance(key, int | str) else key:
                offset = chip.offset(line)
                if offset in wanted:
                    raise ValueError(f"line must be configured exactly once - offset {offset} repeats")
                # A copy: the caller may reuse its LineSettings, the kernel keeps what it was given.
                wanted[offset] = dataclasses.replace(settings or gpiod.LineSettings())
        for settings in wanted.values():
            _validate(settings)
        if any(chip.lines[offset].consumer for offset in wanted):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return FakeRequest(self._gpio, [chip.lines[offset] for offset in wanted], wanted, consumer or "?")

    def close(self) -> None:
        if self._chip is not None:
            self._chip = None
            self._gpio.open_chips -= 1


def _validate(settings: gpiod.LineSettings) -> None:
    """The flag combinations the kernel refuses (gpio_v2_line_flags_validate)."""
    invalid = (
        (settings.edge_detection is not Edge.NONE and settings.direction is not Direction.INPUT)
        or (settings.drive is not Drive.PUSH_PULL and settings.direction is not Direction.OUTPUT)
        or (settings.bias is not Bias.AS_IS and settings.direction is Direction.AS_IS)
    )
    if invalid:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))


class FakeRequest:
    """Requested lines (``gpiod.LineRequest``), with a pipe whose read end is readable while edge events
    are queued."""

    def __init__(
        self, gpio: FakeGpio, lines: list[FakeLine], settings: Mapping[int, gpiod.LineSettings], consumer: str
    ) -> None:
        self._gpio = gpio
        self._lines = {line.offset: line for line in lines}
        self._events: list[gpiod.EdgeEvent] = []
        self._global_seqno = 0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self.released = False
        for line in lines:
            line.consumer, line.request, line.settings = consumer, self, settings[line.offset]
            # As gpio-sim does: the requested bias becomes the level an undriven pin reads.
            if line.settings.bias in (Bias.PULL_UP, Bias.PULL_DOWN):
                line.external = int(line.settings.bias is Bias.PULL_UP)
            line.value = line.settings.output_value
            line.settled = line.logical
            line.line_seqno = 0
            if line.settings.direction is Direction.OUTPUT:
                self._record(line)

    def _check(self) -> None:
        if self.released:
            raise gpiod.RequestReleasedError()

    def _line(self, line: int | str) -> FakeLine:
        self._check()
        for candidate in self._lines.values():
            if line in (candidate.offset, candidate.name):
                return candidate
        raise ValueError(f"unknown line: {line}")

    def _record(self, line: FakeLine) -> None:
        assert line.settings is not None
        self._gpio.history.append(Level(time.monotonic(), line.key, line.level, line.settings.drive))
        self._gpio.wired(line)

    @property
    def fd(self) -> int:
        self._check()
        return self._read_fd

    def set_value(self, line: int | str, value: Value, /) -> None:
        target = self._line(line)
        if target.settings is None or target.settings.direction is not Direction.OUTPUT:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))  # the kernel refuses to set an input
        target.value = value
        self._record(target)

    def get_value(self, line: int | str) -> Value:
        return Value.ACTIVE if self._line(line).logical else Value.INACTIVE

    def emit(self, line: FakeLine, kind: gpiod.EdgeEvent.Type) -> None:
        """Queue an edge event and make the fd readable."""
        assert line.settings is not None
        clock = line.settings.event_clock
        stamp = time.time_ns() if clock is Clock.REALTIME else time.monotonic_ns()
        self._global_seqno += 1
        line.line_seqno += 1
        # As the bindings' C extension does: the raw event type, then the numbers.
        self._events.append(
            gpiod.EdgeEvent(kind.value, stamp, line.offset, self._global_seqno, line.line_seqno)
        )
        os.write(self._write_fd, b"\0")

    def read_edge_events(self, max_events: int | None = None) -> list[gpiod.EdgeEvent]:
        """The queued events (a real request would block when there are none)."""
        self._check()
        count = len(self._events) if max_events is None else min(max_events, len(self._events))
        events, self._events = self._events[:count], self._events[count:]
        if count:
            os.read(self._read_fd, count)
        return events

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for line in self._lines.values():
            if line.debounce_timer is not None:
                line.debounce_timer.cancel()
            line.consumer, line.request, line.settings, line.debounce_timer = "", None, None, None
            self._gpio.wired(line)  # a released pin floats to what the outside world gives it
        os.close(self._read_fd)
        os.close(self._write_fd)

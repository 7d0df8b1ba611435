"""The target's reset and DFU lines through libgpiod v2, and the seam a fake GPIO backend plugs into.

Values are logical (see ``hw.specs``): the request carries ``active_low``, so ``Value.ACTIVE`` on an
active-low line pulls the pin low. Outputs get their initial value in the request itself, so the reset
line never glitches at start-up, and requests are kept until ``close()`` because a released line may
float. Every way a request can fail becomes one ``ConfigError`` (the config names something that is not
there) or ``LinkError`` (busy, no permission) with the fix.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mcu_updater.errors import ConfigError, LinkError, McuUpdaterError
from mcu_updater.hw.specs import Backend, Drive, LineSpec, TargetLine

# Only the gpiod backend needs the bindings: the none and virtual backends must work where gpiod is not
# installed (it is a Linux-only dependency). LibGpiod checks the version before anything uses it.
with contextlib.suppress(ImportError):
    import gpiod

DEFAULT_CONSUMER = "mcu-updater"
MIN_GPIOD = (2, 2)

_PERMISSION_HINT = (
    "add the service user to the 'gpio' group (Raspberry Pi OS has one); elsewhere add a udev rule "
    'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660" and add the user to that group'
)


class TargetLines(Protocol):
    """The target's reset and DFU lines, in logical values (True = asserted)."""

    def set(self, line: TargetLine, active: bool) -> None: ...

    def close(self) -> None: ...


# --- the seam: the part of libgpiod mcu-updater uses ------------------------------------------------


class GpioRequest(Protocol):
    """A ``gpiod.LineRequest``."""

    @property
    def fd(self) -> int: ...

    def set_value(self, line: int | str, value: gpiod.line.Value, /) -> None: ...

    def read_edge_events(self) -> list[gpiod.EdgeEvent]: ...

    def release(self) -> None: ...


class GpioChip(Protocol):
    """An open ``gpiod.Chip``."""

    @property
    def path(self) -> str: ...

    def get_info(self) -> gpiod.ChipInfo: ...

    def line_offset_from_id(self, id: str | int, /) -> int: ...

    def get_line_info(self, line: int | str, /) -> gpiod.LineInfo: ...

    def request_lines(
        self,
        config: dict[Iterable[int | str] | int | str, gpiod.LineSettings | None],
        consumer: str | None = None,
    ) -> GpioRequest: ...

    def close(self) -> None: ...


class GpioBackend(Protocol):
    """Where chips come from: the real bindings (``LibGpiod``) or ``mcu_updater.sim.gpio.FakeGpio``."""

    def chip_paths(self) -> list[str]:
        """Every GPIO chip device, in numeric order."""
        ...

    def open_chip(self, path: str) -> GpioChip:
        """Open a chip; raises OSError like ``gpiod.Chip``."""
        ...


def check_gpiod_version(version: str | None) -> None:
    """Raise ConfigError unless ``version`` (``gpiod.__version__``, None if absent) is a 2.x >= 2.2."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    if found is not None and MIN_GPIOD <= (int(found[1]), int(found[2])) < (3, 0):
        return
    raise ConfigError(
        f"the installed gpiod Python package ({version or 'no version: the v1 API'}) is not the libgpiod "
        "v2 bindings mcu-updater needs (gpiod>=2.2,<3)",
        "pip install 'gpiod>=2.2,<3' in the service's venv (on 32-bit Raspberry Pi OS pip falls back to "
        "the old 1.x wheel: install gcc and python3-dev so it builds 2.x from source); do not use "
        "Debian's python3-libgpiod, which is the v1 API",
    )


class LibGpiod:
    """The real libgpiod v2 bindings."""

    def __init__(self) -> None:
        try:
            module = importlib.import_module("gpiod")
        except ImportError:
            raise ConfigError(
                "the gpiod Python package is not installed", "pip install 'gpiod>=2.2,<3' (Linux only)"
            ) from None
        check_gpiod_version(getattr(module, "__version__", None))

    def chip_paths(self) -> list[str]:
        paths = [str(path) for path in Path("/dev").glob("gpiochip*")]
        # (length, text) sorts gpiochip2 before gpiochip10
        return sorted((p for p in paths if gpiod.is_gpiochip_device(p)), key=lambda p: (len(p), p))

    def open_chip(self, path: str) -> GpioChip:
        return gpiod.Chip(path)


# --- requesting lines, with every failure explained -------------------------------------------------


@dataclass(frozen=True)
class WantedLine:
    """One line to request: where the config says it is (chip path or label, line name or offset)."""

    role: str
    """Names the line in messages ("reset", "button")."""
    chip: str
    line: str | int
    settings: gpiod.LineSettings


@dataclass(frozen=True)
class HeldLine:
    request: GpioRequest
    offset: int


def _chip_list(gpio: GpioBackend) -> str:
    """The chips there are, as advice for a config that names one that is not."""
    try:
        chips = _survey(gpio)
    except McuUpdaterError:
        return "list the chips with gpiodetect"
    if not chips:
        return (
            "this system has no GPIO chips at all (no /dev/gpiochip*): the kernel lacks GPIO character "
            "device support or the board's GPIO driver is not loaded"
        )
    return "set chip to one of: " + ", ".join(f"{path} (label {label})" for path, label in chips)


def _open_error(gpio: GpioBackend, path: str, error: OSError) -> McuUpdaterError:
    if error.errno in (errno.EACCES, errno.EPERM):
        return LinkError(f"no permission to use GPIO chip {path}", _PERMISSION_HINT)
    if error.errno == errno.ENOENT:
        return ConfigError(f"GPIO chip {path} does not exist", _chip_list(gpio))
    if error.errno in (errno.ENODEV, errno.ENOTTY):
        return ConfigError(f"{path} is not a GPIO chip", _chip_list(gpio))
    return LinkError(f"cannot open GPIO chip {path}: {error.strerror}", "check the chip with gpiodetect")


def _open(gpio: GpioBackend, path: str) -> GpioChip:
    try:
        return gpio.open_chip(path)
    except OSError as error:
        raise _open_error(gpio, path, error) from error


def _survey(gpio: GpioBackend) -> list[tuple[str, str]]:
    """(path, label) of every chip."""
    found = []
    for path in gpio.chip_paths():
        chip = _open(gpio, path)
        try:
            found.append((path, chip.get_info().label))
        finally:
            chip.close()
    return found


def _find_chip(gpio: GpioBackend, chip: str) -> GpioChip:
    """Open the chip the config names by path, label or name (``gpiochip0``)."""
    if "/" in chip:
        return _open(gpio, chip)
    chips = _survey(gpio)
    for path, label in chips:
        if chip in (label, Path(path).name):
            return _open(gpio, path)
    raise ConfigError(f"there is no GPIO chip labelled {chip!r}", _chip_list(gpio))


def _where(chip: GpioChip) -> str:
    return f"{chip.path} ({chip.get_info().label})"


def _offset(chip: GpioChip, wanted: WantedLine) -> int:
    try:
        return chip.line_offset_from_id(wanted.line)
    except ValueError:
        lines = chip.get_info().num_lines
        raise ConfigError(
            f"GPIO chip {_where(chip)} has no line {wanted.line} for {wanted.role}",
            f"its lines are 0 to {lines - 1}: check the offset (or give the line's name)",
        ) from None
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise LinkError(
                f"cannot look up GPIO line {wanted.line!r} on {_where(chip)}: {error.strerror}",
                "check the chip with gpioinfo",
            ) from error
        raise ConfigError(
            f"GPIO chip {_where(chip)} has no line named {wanted.line!r} for {wanted.role}",
            f"list its line names with gpioinfo {chip.get_info().label}, or give the line's offset",
        ) from None


def _request_error(chip: GpioChip, lines: Mapping[int, WantedLine], error: OSError) -> McuUpdaterError:
    if error.errno in (errno.EACCES, errno.EPERM):
        return LinkError(f"no permission to use GPIO chip {chip.path}", _PERMISSION_HINT)
    if error.errno == errno.EBUSY:
        for offset, wanted in lines.items():
            info = chip.get_line_info(offset)
            if info.used:
                holder = f"by {info.consumer!r}" if info.consumer else "by another program"
                name = f" ({info.name})" if info.name else ""
                return LinkError(
                    f"the {wanted.role} line, offset {offset}{name} on {_where(chip)}, is already in use "
                    f"{holder}",
                    "stop that program (another mcu-updater, a gpioset/gpiomon, or a kernel driver the "
                    "device tree gives the pin to) and retry",
                )
    roles = ", ".join(wanted.role for wanted in lines.values())
    return LinkError(
        f"cannot request GPIO lines {roles} on {_where(chip)}: {error.strerror}",
        "check the lines with gpioinfo; a chip that cannot do open-drain needs drive: push-pull",
    )


def line_info(gpio: GpioBackend, role: str, chip: str, line: str | int) -> tuple[str, gpiod.LineInfo]:
    """Where a configured line is ("path (label)") and the kernel's view of it, without requesting it;
    raises the ConfigError or LinkError a request would."""
    handle = _find_chip(gpio, chip)
    try:
        offset = _offset(handle, WantedLine(role, chip, line, gpiod.LineSettings()))
        return _where(handle), handle.get_line_info(offset)
    finally:
        handle.close()


def _locate(
    gpio: GpioBackend, wanted: Sequence[WantedLine], chips: dict[str, GpioChip]
) -> dict[str, dict[int, WantedLine]]:
    """Open the chips of ``wanted`` into ``chips`` (by path) and map each line to its offset there."""
    per_chip: dict[str, dict[int, WantedLine]] = {}
    for line in wanted:
        chip = _find_chip(gpio, line.chip)
        path = chip.path
        if path in chips:
            chip.close()  # both lines are on this chip (maybe named once by path, once by label)
        chip = chips.setdefault(path, chip)
        offset = _offset(chip, line)
        lines = per_chip.setdefault(path, {})
        if offset in lines:
            raise ConfigError(
                f"{lines[offset].role} and {line.role} are the same GPIO line "
                f"({_where(chip)} offset {offset})",
                "give each its own line",
            )
        lines[offset] = line
    return per_chip


def request_lines(gpio: GpioBackend, wanted: Sequence[WantedLine], consumer: str) -> dict[str, HeldLine]:
    """Request every wanted line, one request per chip, and return them by role; all or nothing."""
    chips: dict[str, GpioChip] = {}
    held: dict[str, HeldLine] = {}
    try:
        for path, lines in _locate(gpio, wanted, chips).items():
            config: dict[Iterable[int | str] | int | str, gpiod.LineSettings | None] = {
                offset: line.settings for offset, line in lines.items()
            }
            try:
                request = chips[path].request_lines(config, consumer=consumer)
            except OSError as error:
                raise _request_error(chips[path], lines, error) from error
            held.update({line.role: HeldLine(request, offset) for offset, line in lines.items()})
    except BaseException:
        release(held.values())
        raise
    finally:
        for chip in chips.values():
            chip.close()
    return held


def release(lines: Iterable[HeldLine]) -> None:
    """Release the requests behind ``lines`` (several lines may share one)."""
    for request in {id(line.request): line.request for line in lines}.values():
        request.release()


# --- target lines ----------------------------------------------------------------------------------


class GpiodTargetLines:
    """Reset and DFU on libgpiod v2 outputs, on one chip or two."""

    def __init__(
        self,
        reset: LineSpec,
        dfu: LineSpec,
        *,
        consumer: str = DEFAULT_CONSUMER,
        initial: Mapping[TargetLine, bool] | None = None,
        gpio: GpioBackend | None = None,
    ) -> None:
        """``initial``: the logical value each line starts at (default released), set in the request."""
        gpio = gpio or LibGpiod()  # first: it checks the gpiod version the settings need
        initial = initial or {}
        wanted = [
            WantedLine(line.value, spec.chip, spec.line, _output(spec, initial.get(line, False)))
            for line, spec in ((TargetLine.RESET, reset), (TargetLine.DFU, dfu))
        ]
        self._lines = request_lines(gpio, wanted, consumer)

    def set(self, line: TargetLine, active: bool) -> None:
        held = self._lines[line]
        try:
            held.request.set_value(held.offset, _value(active))
        except OSError as error:
            raise LinkError(
                f"cannot drive the {line} line: {error.strerror}", "check that the GPIO chip is still there"
            ) from error

    def close(self) -> None:
        release(self._lines.values())


def _value(active: bool) -> gpiod.line.Value:
    return gpiod.line.Value.ACTIVE if active else gpiod.line.Value.INACTIVE


def _output(spec: LineSpec, active: bool) -> gpiod.LineSettings:
    drive = gpiod.line.Drive.OPEN_DRAIN if spec.drive is Drive.OPEN_DRAIN else gpiod.line.Drive.PUSH_PULL
    return gpiod.LineSettings(
        direction=gpiod.line.Direction.OUTPUT,
        drive=drive,
        active_low=spec.active_low,
        output_value=_value(active),
    )


class NoTargetLines:
    """Backend ``none``: nothing is wired; ``state`` keeps what would be driven, for the log."""

    def __init__(self, initial: Mapping[TargetLine, bool] | None = None) -> None:
        self.state = dict.fromkeys(TargetLine, False) | dict(initial or {})

    def set(self, line: TargetLine, active: bool) -> None:
        self.state[line] = active

    def close(self) -> None:
        """Nothing to release."""


def open_target_lines(
    backend: Backend,
    reset: LineSpec | None,
    dfu: LineSpec | None,
    *,
    consumer: str = DEFAULT_CONSUMER,
    initial: Mapping[TargetLine, bool] | None = None,
    gpio: GpioBackend | None = None,
) -> TargetLines:
    """The lines of the ``gpiod`` or ``none`` backend (``virtual`` is ``sim.lines.VirtualTargetLines``)."""
    if backend is Backend.NONE:
        return NoTargetLines(initial)
    if backend is not Backend.GPIOD:
        raise ValueError(f"the {backend} backend needs a virtual nRF52: use sim.lines.VirtualTargetLines")
    if reset is None or dfu is None:
        missing = " and ".join(name for name, spec in (("reset", reset), ("dfu", dfu)) if spec is None)
        raise ConfigError(f"the gpiod backend needs the {missing} line", f"add {missing} to the config")
    return GpiodTargetLines(reset, dfu, consumer=consumer, initial=initial, gpio=gpio)

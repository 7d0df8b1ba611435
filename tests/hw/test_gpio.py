"""Target lines on the fake libgpiod: requested settings, sequences from the pin history, errors."""

from __future__ import annotations

import errno
from collections.abc import Sequence

import gpiod
import pytest
from gpiod.line import Direction, Drive, Value

from mcu_updater.errors import ConfigError, LinkError, McuUpdaterError
from mcu_updater.hw.gpio import (
    GpiodTargetLines,
    LibGpiod,
    NoTargetLines,
    check_gpiod_version,
    open_target_lines,
)
from mcu_updater.hw.specs import (
    DEFAULT_ENTER_BOOTLOADER,
    DEFAULT_RETURN_TO_APP,
    Backend,
    LineSpec,
    TargetLine,
)
from mcu_updater.hw.specs import Drive as SpecDrive
from mcu_updater.sim.gpio import FakeChip, FakeGpio, Level
from mcu_updater.target import run_sequence

HEADER = "pinctrl-bcm2711"
RESET = LineSpec(HEADER, "GPIO5")
DFU = LineSpec("/dev/gpiochip0", 6)


def fake(*, busy: dict[str | int, str] | None = None, denied: bool = False) -> FakeGpio:
    """A Raspberry Pi 4: the header chip with named lines, and an expander with unnamed ones."""
    return FakeGpio(
        FakeChip("/dev/gpiochip0", HEADER, [f"GPIO{n}" for n in range(58)], busy=busy, denied=denied),
        FakeChip("/dev/gpiochip1", "raspberrypi-exp-gpio", 8),
    )


def open_lines(
    gpio: FakeGpio, reset: LineSpec = RESET, dfu: LineSpec = DFU, *, held: bool = False
) -> GpiodTargetLines:
    """The lines, with reset ``held`` from the start (DFU released)."""
    return GpiodTargetLines(reset, dfu, gpio=gpio, initial={TargetLine.RESET: held})


def edges(levels: Sequence[Level]) -> list[tuple[str, int]]:
    """The history as (line, level), dropping repeats of a line's level."""
    last: dict[str, int] = {}
    out = []
    for entry in levels:
        if last.get(entry.line) != entry.level:
            out.append((entry.line, entry.level))
            last[entry.line] = entry.level
    return out


def when(levels: Sequence[Level], line: str, level: int, after: float = 0.0) -> float:
    """Time of the first entry of ``line`` at ``level`` from ``after`` on."""
    return next(e.time for e in levels if e.line == line and e.level == level and e.time >= after)


# --- requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drive", "active_low", "gpiod_drive"),
    [
        (SpecDrive.OPEN_DRAIN, True, Drive.OPEN_DRAIN),
        (SpecDrive.PUSH_PULL, False, Drive.PUSH_PULL),
    ],
)
def test_the_request_carries_direction_drive_polarity_and_initial_value(
    drive: SpecDrive, active_low: bool, gpiod_drive: Drive
) -> None:
    gpio = fake()
    reset = LineSpec(HEADER, "GPIO5", active_low=active_low, drive=drive)
    dfu = LineSpec(HEADER, "GPIO6", active_low=active_low, drive=drive)
    lines = open_lines(gpio, reset, dfu, held=True)
    for name, value in (("GPIO5", Value.ACTIVE), ("GPIO6", Value.INACTIVE)):
        line = gpio.line(name)
        assert line.settings == gpiod.LineSettings(
            direction=Direction.OUTPUT, drive=gpiod_drive, active_low=active_low, output_value=value
        )
        assert line.consumer == "mcu-updater"
    lines.close()


@pytest.mark.parametrize("held", [True, False])
def test_initial_values_are_in_the_request_so_nothing_glitches(held: bool) -> None:
    gpio = fake()
    lines = open_lines(gpio, held=held)
    # The first level the pins ever show is the initial one: no opposite level before it.
    assert [(e.line, e.level) for e in gpio.history] == [("GPIO5", 0 if held else 1), ("GPIO6", 1)]
    lines.close()


async def test_enter_and_return_sequences_have_their_order_and_pulse_widths() -> None:
    gpio = fake()
    lines = open_lines(gpio, held=True)
    await run_sequence(lines, DEFAULT_ENTER_BOOTLOADER)
    enter = gpio.history[2:]
    assert edges(gpio.history) == [
        ("GPIO5", 0),  # held at start-up
        ("GPIO6", 1),
        ("GPIO6", 0),  # DFU asserted before reset is released...
        ("GPIO5", 1),  # ...and reset released after a fresh 20 ms pulse
    ]
    assert [(e.line, e.level) for e in enter] == [("GPIO6", 0), ("GPIO5", 0), ("GPIO5", 1)]
    assert when(enter, "GPIO5", 1) - when(enter, "GPIO5", 0) >= 0.020
    assert when(enter, "GPIO5", 0) - when(enter, "GPIO6", 0) >= 0.001

    mark = len(gpio.history)
    await run_sequence(lines, DEFAULT_RETURN_TO_APP)
    back = gpio.history[mark:]
    assert [(e.line, e.level) for e in back] == [("GPIO6", 1), ("GPIO5", 0), ("GPIO5", 1)]
    assert when(back, "GPIO5", 1) - when(back, "GPIO5", 0) >= 0.020
    assert when(back, "GPIO5", 0) - when(back, "GPIO6", 1) >= 0.001
    # Open drain: the host only ever pulls low; high is the target's pull-up.
    assert all(entry.driven == (entry.level == 0) for entry in gpio.history)
    lines.close()


async def test_push_pull_active_high_drives_both_levels() -> None:
    gpio = fake()
    reset, dfu = (LineSpec(HEADER, n, active_low=False, drive=SpecDrive.PUSH_PULL) for n in (5, 6))
    lines = open_lines(gpio, reset, dfu)
    await run_sequence(lines, DEFAULT_ENTER_BOOTLOADER)
    assert [(e.line, e.level) for e in gpio.history] == [
        ("GPIO5", 0),
        ("GPIO6", 0),
        ("GPIO6", 1),
        ("GPIO5", 1),
        ("GPIO5", 0),
    ]
    assert all(entry.driven for entry in gpio.history)
    lines.close()


@pytest.mark.parametrize(
    ("reset", "dfu"),
    [
        (LineSpec("/dev/gpiochip0", "GPIO5"), LineSpec(HEADER, 6)),  # path + name, label + offset
        (LineSpec("gpiochip0", "5"), LineSpec(HEADER, "GPIO6")),  # chip name, offset as text
    ],
)
def test_chip_by_path_label_or_name_and_line_by_name_or_offset(reset: LineSpec, dfu: LineSpec) -> None:
    gpio = fake()
    lines = open_lines(gpio, reset, dfu)
    lines.set(TargetLine.RESET, True)
    assert gpio.history[-1][1:3] == ("GPIO5", 0)
    assert gpio.line("GPIO5").request is gpio.line("GPIO6").request  # one request per chip
    lines.close()


def test_lines_on_two_chips_get_one_request_each() -> None:
    gpio = fake()
    lines = open_lines(gpio, RESET, LineSpec("raspberrypi-exp-gpio", 3))
    lines.set(TargetLine.DFU, True)
    assert gpio.history[-1][1:3] == ("raspberrypi-exp-gpio:3", 0)
    reset_request = gpio.line("GPIO5").request
    assert reset_request is not None
    assert reset_request is not gpio.line("raspberrypi-exp-gpio:3").request
    lines.close()
    assert not gpio.line("GPIO5").info().used
    assert not gpio.line("raspberrypi-exp-gpio:3").info().used


def test_close_releases_the_lines_and_the_chips_are_not_kept_open() -> None:
    gpio = fake()
    lines = open_lines(gpio)
    assert gpio.open_chips == 0
    assert gpio.line("GPIO5").info().consumer == "mcu-updater"
    lines.close()
    lines.close()
    assert not gpio.line("GPIO5").info().used
    assert not gpio.line("GPIO6").info().used
    with pytest.raises(gpiod.RequestReleasedError):
        lines.set(TargetLine.RESET, True)


# --- errors ---------------------------------------------------------------------------------------


def failure(gpio: FakeGpio, reset: LineSpec = RESET, dfu: LineSpec = DFU) -> McuUpdaterError:
    with pytest.raises(McuUpdaterError) as caught:
        open_lines(gpio, reset, dfu)
    error = caught.value
    assert "\n" not in str(error)
    assert error.hint
    assert gpio.open_chips == 0
    return error


def test_a_missing_chip_names_it_and_lists_the_chips_there_are() -> None:
    error = failure(fake(), dfu=LineSpec("/dev/gpiochip4", 6))
    assert isinstance(error, ConfigError)
    assert error.message == "GPIO chip /dev/gpiochip4 does not exist"
    assert "/dev/gpiochip0 (label pinctrl-bcm2711), /dev/gpiochip1 (label raspberrypi-exp-gpio)" in error.hint
    error = failure(fake(), reset=LineSpec("pinctrl-bcm2835", 5))
    assert isinstance(error, ConfigError)
    assert "no GPIO chip labelled 'pinctrl-bcm2835'" in error.message
    assert "/dev/gpiochip0 (label pinctrl-bcm2711)" in error.hint


def test_a_system_without_chips_says_so() -> None:
    error = failure(FakeGpio())
    assert isinstance(error, ConfigError)
    assert "no GPIO chips at all" in error.hint


def test_the_real_bindings_report_a_missing_chip() -> None:
    gpio = LibGpiod()
    with pytest.raises(ConfigError) as caught:
        GpiodTargetLines(LineSpec("/dev/gpiochip-mcu-updater-test", 5), DFU, gpio=gpio)
    assert caught.value.message == "GPIO chip /dev/gpiochip-mcu-updater-test does not exist"
    if not gpio.chip_paths():
        assert "no GPIO chips at all" in caught.value.hint


def test_a_missing_line_names_the_chip() -> None:
    error = failure(fake(), reset=LineSpec(HEADER, "GPIO99"))
    assert isinstance(error, ConfigError)
    assert error.message == (
        "GPIO chip /dev/gpiochip0 (pinctrl-bcm2711) has no line named 'GPIO99' for reset"
    )
    assert "gpioinfo pinctrl-bcm2711" in error.hint
    error = failure(fake(), dfu=LineSpec("raspberrypi-exp-gpio", 8))
    assert isinstance(error, ConfigError)
    assert "has no line 8 for dfu" in error.message
    assert "0 to 7" in error.hint


def test_the_same_line_twice_is_a_config_error() -> None:
    error = failure(fake(), dfu=LineSpec("/dev/gpiochip0", 5))
    assert isinstance(error, ConfigError)
    assert "reset and dfu are the same GPIO line" in error.message


def test_a_busy_line_names_who_holds_it_and_nothing_stays_requested() -> None:
    gpio = fake(busy={"GPIO6": "gpioset"})
    error = failure(gpio, dfu=LineSpec(HEADER, "GPIO6"), reset=LineSpec("raspberrypi-exp-gpio", 0))
    assert isinstance(error, LinkError)
    assert error.exit_code == 74
    assert error.message == (
        "the dfu line, offset 6 (GPIO6) on /dev/gpiochip0 (pinctrl-bcm2711), is already in use by 'gpioset'"
    )
    assert "stop that program" in error.hint
    # The reset line on the other chip was requested first and is released again.
    assert not gpio.line("raspberrypi-exp-gpio:0").info().used


def test_no_permission_names_the_gpio_group_and_the_udev_rule() -> None:
    error = failure(fake(denied=True))
    assert isinstance(error, LinkError)
    assert error.message == "no permission to use GPIO chip /dev/gpiochip0"
    assert "'gpio' group" in error.hint
    assert 'KERNEL=="gpiochip*"' in error.hint


@pytest.mark.parametrize("version", ["1.5.4", None, "2.1.3", "3.0.0"])
def test_gpiod_other_than_2_2_to_3_says_how_to_get_it(version: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        check_gpiod_version(version)
    assert "gpiod>=2.2,<3" in str(caught.value)
    assert "32-bit Raspberry Pi OS" in caught.value.hint
    assert "python3-libgpiod" in caught.value.hint


def test_gpiod_2_2_and_later_2_x_pass() -> None:
    check_gpiod_version("2.2.0")
    check_gpiod_version(gpiod.__version__)


def test_the_fake_refuses_what_the_kernel_refuses() -> None:
    chip = fake().open_chip("/dev/gpiochip0")
    with pytest.raises(OSError, match="Invalid argument") as caught:
        chip.request_lines({5: gpiod.LineSettings(drive=Drive.OPEN_DRAIN)})  # open drain needs output
    assert caught.value.errno == errno.EINVAL
    chip.close()


# --- factory and backend none -----------------------------------------------------------------------


def test_backend_none_records_what_it_would_drive() -> None:
    lines = open_target_lines(Backend.NONE, None, None, initial={TargetLine.RESET: True})
    assert isinstance(lines, NoTargetLines)
    assert lines.state == {TargetLine.RESET: True, TargetLine.DFU: False}
    lines.set(TargetLine.DFU, True)
    assert lines.state[TargetLine.DFU] is True
    lines.close()


def test_backend_gpiod_needs_both_lines_and_virtual_is_elsewhere() -> None:
    gpio = fake()
    lines = open_target_lines(Backend.GPIOD, RESET, DFU, gpio=gpio, consumer="mcu-updater-test")
    assert isinstance(lines, GpiodTargetLines)
    assert gpio.line("GPIO5").consumer == "mcu-updater-test"
    lines.close()
    with pytest.raises(ConfigError, match="needs the dfu line"):
        open_target_lines(Backend.GPIOD, RESET, None, gpio=gpio)
    with pytest.raises(ValueError, match="VirtualTargetLines"):
        open_target_lines(Backend.VIRTUAL, None, None)

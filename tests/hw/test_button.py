"""The update button on the fake libgpiod: settings, one press per debounced edge, no polling."""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import gpiod
import pytest
from gpiod.line import Bias, Direction, Edge

from mcu_updater.errors import LinkError
from mcu_updater.hw.button import GpiodButton, button_settings
from mcu_updater.hw.specs import ButtonSpec
from mcu_updater.sim.gpio import FakeChip, FakeGpio

HEADER = "pinctrl-bcm2711"
SPEC = ButtonSpec(HEADER, "GPIO26")
SETTLE = SPEC.debounce * 2 + 0.02


def fake(busy: dict[str | int, str] | None = None) -> FakeGpio:
    return FakeGpio(FakeChip("/dev/gpiochip0", HEADER, [f"GPIO{n}" for n in range(58)], busy=busy))


class Presses:
    """Loop times of ``on_press`` calls."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self) -> None:
        self.times.append(asyncio.get_running_loop().time())


@pytest.fixture
async def pressed() -> AsyncIterator[tuple[FakeGpio, Presses]]:
    """A started button on the fake, and the presses it reported."""
    gpio, presses = fake(), Presses()
    button = GpiodButton(SPEC, gpio=gpio)
    button.start(presses)
    yield gpio, presses
    button.close()


@pytest.mark.parametrize(("active_low", "bias"), [(True, Bias.PULL_UP), (False, Bias.PULL_DOWN)])
def test_the_request_is_a_biased_input_on_the_press_edge_with_kernel_debounce(
    active_low: bool, bias: Bias
) -> None:
    gpio = fake()
    button = GpiodButton(ButtonSpec(HEADER, 26, active_low=active_low, debounce=0.03), gpio=gpio)
    assert gpio.line("GPIO26").settings == gpiod.LineSettings(
        direction=Direction.INPUT,
        edge_detection=Edge.RISING,  # logical: the press, whatever the polarity
        bias=bias,
        active_low=active_low,
        debounce_period=timedelta(milliseconds=30),
    )
    assert gpio.line("GPIO26").info().debounced
    button.close()


async def test_each_press_is_reported_once_a_debounce_period_after_it(
    pressed: tuple[FakeGpio, Presses],
) -> None:
    gpio, presses = pressed
    started = asyncio.get_running_loop().time()
    for _ in range(2):
        await gpio.press("GPIO26")
        await asyncio.sleep(SETTLE)  # open for less than the period, the two would be one press
    assert len(presses.times) == 2
    assert presses.times[0] - started >= SPEC.debounce


async def test_an_active_high_button_is_pressed_towards_its_pull_down() -> None:
    gpio, presses = fake(), Presses()
    button = GpiodButton(ButtonSpec(HEADER, "GPIO26", active_low=False), gpio=gpio)
    button.start(presses)
    assert gpio.line("GPIO26").level == 0
    await gpio.press("GPIO26")
    await asyncio.sleep(SETTLE)
    assert len(presses.times) == 1
    button.close()


async def test_chatter_collapses_into_one_press(pressed: tuple[FakeGpio, Presses]) -> None:
    gpio, presses = pressed
    await gpio.press("GPIO26", bounces=5)
    await asyncio.sleep(SETTLE)
    assert len(presses.times) == 1


async def test_a_glitch_shorter_than_the_debounce_period_is_no_press(
    pressed: tuple[FakeGpio, Presses],
) -> None:
    gpio, presses = pressed
    await gpio.bounce("GPIO26", 4)
    await asyncio.sleep(SETTLE)
    assert presses.times == []


async def test_without_debounce_every_bounce_is_a_press() -> None:
    gpio, presses = fake(), Presses()
    button = GpiodButton(ButtonSpec(HEADER, "GPIO26", debounce=0), gpio=gpio)
    button.start(presses)
    await gpio.press("GPIO26", bounces=1)  # closing: 3 flips, 2 of them close; opening: 3, 1 closes
    await asyncio.sleep(0.01)
    assert len(presses.times) == 3
    button.close()


async def test_the_fake_queues_real_edge_events_on_a_pollable_fd() -> None:
    gpio = fake()
    chip = gpio.open_chip("/dev/gpiochip0")
    request = chip.request_lines({26: button_settings(SPEC)})
    chip.close()

    def readable() -> bool:
        return bool(select.select([request.fd], [], [], 0)[0])

    closed = time.monotonic_ns()
    gpio.set_level("GPIO26", 0)  # the contact closes: a logical rising edge
    assert not readable()  # the kernel reports it only once it has been stable for the period
    await asyncio.sleep(SPEC.debounce + 0.01)
    assert readable()
    [event] = request.read_edge_events()
    assert isinstance(event, gpiod.EdgeEvent)
    assert event.event_type is gpiod.EdgeEvent.Type.RISING_EDGE
    assert (event.line_offset, event.global_seqno, event.line_seqno) == (26, 1, 1)
    assert event.timestamp_ns - closed >= SPEC.debounce * 1e9
    assert not readable()
    gpio.set_level("GPIO26", 1)  # the release is a falling edge, which was not requested
    await asyncio.sleep(SPEC.debounce + 0.01)
    assert not readable()
    request.release()


async def test_start_registers_a_reader_and_creates_no_task_or_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    gpio, presses = fake(), Presses()
    button = GpiodButton(SPEC, gpio=gpio)
    loop = asyncio.get_running_loop()
    calls: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        original = getattr(loop, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return call

    for name in ("add_reader", "remove_reader", "call_at", "call_later", "call_soon", "create_task"):
        monkeypatch.setattr(loop, name, spy(name))
    tasks = asyncio.all_tasks()
    button.start(presses)
    assert calls == ["add_reader"]
    assert asyncio.all_tasks() == tasks
    with pytest.raises(RuntimeError, match="already started"):
        button.start(presses)
    monkeypatch.undo()

    fd = gpio.line("GPIO26").request.fd  # type: ignore[union-attr]
    button.close()
    assert not loop.remove_reader(fd)  # close() removed it
    assert not gpio.line("GPIO26").info().used
    button.close()


def test_a_busy_button_line_names_its_holder() -> None:
    with pytest.raises(LinkError) as caught:
        GpiodButton(SPEC, gpio=fake(busy={"GPIO26": "gpiomon"}))
    assert "the button line, offset 26 (GPIO26)" in caught.value.message
    assert "in use by 'gpiomon'" in caught.value.message

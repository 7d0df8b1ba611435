"""The update button: a libgpiod v2 input whose debounced press edges wake the event loop.

The kernel does the work: edge detection on the logical press edge and debounce (emulated where the
chip has none, so a press is reported once the contact has been stable for the debounce period). The
request's fd becomes readable when an edge is queued, so the loop watches it with ``add_reader``: no
polling, no timer, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from mcu_updater.errors import LinkError
from mcu_updater.hw.gpio import DEFAULT_CONSUMER, GpioBackend, LibGpiod, WantedLine, request_lines
from mcu_updater.hw.specs import ButtonSpec

with contextlib.suppress(ImportError):  # as in hw.gpio: LibGpiod reports a missing or old gpiod
    import gpiod


class Button(Protocol):
    def start(self, on_press: Callable[[], None]) -> None:
        """Call ``on_press`` (on the running loop) once per press, from now until ``close``."""
        ...

    def close(self) -> None: ...


def button_settings(spec: ButtonSpec) -> gpiod.LineSettings:
    """Input with the bias the button needs and the kernel's debounce.

    Values and edges are logical: pressing an active-low button pulls the pin to ground, which is a
    RISING edge. The internal pull-up holds an active-low button's pin high while it is open (a pull-down
    for an active-high one); an external resistor in parallel does no harm.
    """
    bias = gpiod.line.Bias.PULL_UP if spec.active_low else gpiod.line.Bias.PULL_DOWN
    return gpiod.LineSettings(
        direction=gpiod.line.Direction.INPUT,
        edge_detection=gpiod.line.Edge.RISING,
        bias=bias,
        active_low=spec.active_low,
        debounce_period=timedelta(seconds=spec.debounce),
    )


class GpiodButton:
    """The button on a libgpiod v2 line; the line is requested at construction, so errors surface early."""

    def __init__(
        self, spec: ButtonSpec, *, consumer: str = DEFAULT_CONSUMER, gpio: GpioBackend | None = None
    ) -> None:
        gpio = gpio or LibGpiod()  # first: it checks the gpiod version the settings need
        wanted = WantedLine("button", spec.chip, spec.line, button_settings(spec))
        self._request = request_lines(gpio, [wanted], consumer)["button"].request
        self._fd = self._request.fd
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, on_press: Callable[[], None]) -> None:
        if self._loop is not None:
            raise RuntimeError("the button is already started")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable, on_press)

    def _readable(self, on_press: Callable[[], None]) -> None:
        try:
            events = self._request.read_edge_events()
        except OSError as error:
            # The fd would stay readable and the loop would spin on it: stop watching.
            self._stop_reading()
            raise LinkError(
                f"cannot read the button's GPIO events: {error.strerror}",
                "check that the GPIO chip is still there; restart the service",
            ) from error
        for _ in events:  # only press edges are requested
            on_press()

    def _stop_reading(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def close(self) -> None:
        self._stop_reading()
        self._request.release()

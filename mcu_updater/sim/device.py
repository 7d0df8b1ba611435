"""The virtual nRF52 on the event loop: the bootloader model behind a UART with time, resets and faults.

Time model. Every host byte gets a virtual arrival time: 10 bits at ``baud`` after the previous byte, and
not before the host wrote it. The CPU takes a byte when it arrives, or when a stall ends; meanwhile bytes
wait in the 4-byte UARTE FIFO. With flow control a full FIFO holds the host (RTS); without it, the next
byte overruns the FIFO and the UART error resets the chip. With ``Timing.flash`` the CPU stalls for the
nRF52832 maxima: 85 ms per erased page (data CREATE, before its reply), 67.5 us per written word (after
each data WRITE), 182 ms per settings write (init-packet EXECUTE, post-validation). Replies leave on a TX
line at the same baud, in order.

After any reset the device is deaf (arriving bytes are lost) while it boots: 80 ms without flash timing,
else 30 ms per boot plus activation (per copied page 85 ms + 1024 words, one settings write per 8 copied
pages and one at the end). Then it enters DFU mode (inactivity timeout 120 s, or 10 s of continuation
after a SoftDevice activation that kept the app) or runs the application, which ignores every byte. The
virtual DFU pin (P0.16 held low) is asserted by default. ``hold_reset`` models the host's reset line:
while it is asserted the chip is off and deaf, and releasing it boots (sampling the DFU pin).

The device runs at most a couple of milliseconds ahead of real time and catches up with sleeps, so
averages are exact while wake-ups stay few. A reset never truncates a reply already queued for sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol, Self

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu import slip
from mcu_updater.errors import LinkError, McuUpdaterError
from mcu_updater.sim.bootloader import (
    Boot,
    Bootloader,
    Effect,
    Erase,
    FeedTimer,
    Mode,
    Program,
    Reset,
    ResetReason,
    Send,
    SettingsWrite,
)
from mcu_updater.sim.faults import Faults
from mcu_updater.sim.state import FlashState, StateFile
from mcu_updater.sim.stats import Stats
from mcu_updater.sim.validation import Profile

PAGE_ERASE_S: Final = 0.085
WORD_WRITE_S: Final = 67.5e-6
SETTINGS_WRITE_S: Final = 0.182
BOOT_S: Final = 0.030
QUICK_BOOT_S: Final = 0.080
UARTE_FIFO: Final = 4
WORDS_PER_PAGE: Final = 1024
_SLACK: Final = 0.002
_YIELD_EVERY: Final = 256  # bytes processed between forced yields when the device runs ahead of time


@dataclass(frozen=True)
class Timing:
    """How time passes on the device; the defaults make everything instant except the boot."""

    baud: int | None = None
    """Line rate in both directions, 10 bits per byte; None for an infinitely fast line."""
    flash: bool = False
    """Model nRF52832 flash erase/write stalls and activation times."""
    quick_boot: float = QUICK_BOOT_S
    """Deaf time after a reset when ``flash`` is off."""
    inactivity: float = 120.0
    continuation: float = 10.0

    @property
    def byte_time(self) -> float:
        return 10 / self.baud if self.baud else 0.0

    def stall(self, effect: Effect) -> float:
        """CPU time an effect costs."""
        if not self.flash:
            return 0.0
        if isinstance(effect, Erase):
            return effect.pages * PAGE_ERASE_S
        if isinstance(effect, Program):
            return effect.words * WORD_WRITE_S
        return SETTINGS_WRITE_S if isinstance(effect, SettingsWrite) else 0.0

    def boot_time(self, boot: Boot) -> float:
        if not self.flash:
            return self.quick_boot
        copy = boot.copied_pages * (PAGE_ERASE_S + WORDS_PER_PAGE * WORD_WRITE_S)
        return boot.boots * BOOT_S + copy + boot.settings_writes * SETTINGS_WRITE_S


class HostPort(Protocol):
    """The host end of the virtual UART (an in-memory transport or a pty)."""

    def deliver(self, data: bytes) -> None:
        """Bytes the device transmitted, now fully on the line."""

    def backlog_changed(self, backlog: int) -> None:
        """The device consumed host bytes; ``backlog`` are still queued on the line."""

    def device_closed(self) -> None:
        """The device is shutting down; the port will get nothing more."""


class DelayLine:
    """Delivers byte strings in order, each at or after its due time, from a single timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[bytes], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def put(self, due: float, data: bytes) -> None:
        self._queue.append((due, data))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._fire)

    def clear(self) -> int:
        """Forget everything queued; returns how many bytes that was."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dropped = sum(len(data) for _, data in self._queue)
        self._queue.clear()
        return dropped

    def _fire(self) -> None:
        self._timer = None
        # The loop may fire a timer a clock tick early: the head is due by definition.
        _, data = self._queue.popleft()
        self._deliver(data)
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            self._deliver(self._queue.popleft()[1])
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._fire)


class VirtualNrf52:
    """An nRF52832 running the SDK 15.2 serial DFU bootloader, reachable through one ``HostPort``."""

    def __init__(
        self,
        *,
        flash: FlashState | None = None,
        store: StateFile | None = None,
        profile: Profile = Profile.SDK,
        public_key: ec.EllipticCurvePublicKey | None = None,
        timing: Timing = Timing(),
        flow_control: bool = True,
        faults: Faults | None = None,
        dfu_pin: bool = True,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        """``flow_control=False``: the host ignores CTS. ``store`` is loaded unless ``flash`` is given."""
        if flash is None:
            flash = store.load() if store is not None else FlashState()
        self.stats = Stats()
        self.bootloader = Bootloader(flash, profile=profile, public_key=public_key, stats=self.stats)
        self.store = store
        self.timing = timing
        self.flow_control = flow_control
        self.faults = faults if faults is not None else Faults()
        self.dfu_pin = dfu_pin
        """The DFU-enter pin (P0.16) is held low: every reset enters DFU mode."""
        self.persist_error: McuUpdaterError | None = None
        self._on_event = on_event
        self._port: HostPort | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._tx: DelayLine | None = None
        self._rx: deque[tuple[bytes, float]] = deque()
        self._rx_pos = 0
        self._rx_index = 0
        self._backlog = 0
        self._wake = asyncio.Event()
        self._inactivity: asyncio.TimerHandle | None = None
        self._line_free = self._cpu_free = self._tx_free = self._deaf_until = 0.0
        self._fifo: deque[tuple[int, float]] = deque()
        self._generation = 0
        self._reply_hits: Counter[int] = Counter()
        self._power_cycle_fired = False
        self._reset_held = False
        self._reset_released = asyncio.Event()
        self._reset_released.set()

    # --- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Power the device on (it boots, deaf, then listens); needs a running event loop."""
        if self._task is not None:
            raise RuntimeError("the virtual nRF52 is already running")
        self._loop = asyncio.get_running_loop()
        self._tx = DelayLine(self._loop, self._deliver)
        if not self._reset_held:
            self._boot(self._loop.time())
        self._task = self._loop.create_task(self._run(), name="virtual-nrf52")

    async def close(self) -> None:
        """Power off: stop the device and tell a connected port."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._cancel_inactivity()
        if self._tx is not None:
            self.stats.bytes_discarded += self._tx.clear()
        if self._port is not None:
            port, self._port = self._port, None
            port.device_closed()

    async def serve_forever(self) -> None:
        """Wait until the device is closed (raises if it failed)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    # --- host side ----------------------------------------------------------------------------

    def attach(self, port: HostPort) -> None:
        if self._port is not None:
            raise LinkError(
                "the virtual nRF52's serial port is already open", "close the other connection first"
            )
        self._port = port

    def detach(self, port: HostPort) -> None:
        if self._port is port:
            self._port = None

    def receive(self, data: bytes) -> None:
        """Bytes the host wrote to the UART."""
        if not data:
            return
        flips = [i - self._rx_index for i in self.faults.flip_rx if 0 <= i - self._rx_index < len(data)]
        if flips:
            damaged = bytearray(data)
            for i in flips:
                damaged[i] ^= 0x01
            data = bytes(damaged)
        self._rx_index += len(data)
        self.stats.bytes_in += len(data)
        self._backlog += len(data)
        self._rx.append((data, self._now()))
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Host bytes written but not yet taken by the device (the UART's write buffer)."""
        return self._backlog

    # --- control ------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """OFF while resetting/booting, else DFU or APP."""
        return Mode.OFF if self._now() < self._deaf_until else self.bootloader.mode

    async def until_booted(self) -> Mode:
        """Sleep until the device has finished booting; returns the mode it booted into."""
        while self._now() < self._deaf_until:  # a reset or a released reset pin meanwhile moves the deadline
            if self._reset_held:
                await self._reset_released.wait()
            else:
                await asyncio.sleep(self._deaf_until - self._now())
        return self.bootloader.mode

    def power_cycle(self) -> None:
        self._reset(ResetReason.POWER, self._now())

    def reset(self) -> None:
        """Pulse nRESET."""
        self._reset(ResetReason.PIN, self._now())

    def hold_reset(self, asserted: bool) -> None:
        """Drive nRESET: asserted, the chip is off and deaf until released; releasing it boots."""
        if asserted == self._reset_held:
            return
        self._reset_held = asserted
        if not asserted:
            self._reset_released.set()
            if self._loop is not None:  # else start() boots it
                self._reset(ResetReason.PIN, self._now())
            return
        self._reset_released.clear()
        self._generation += 1  # voids any reset an earlier effect scheduled
        self._cancel_inactivity()
        self._deaf_until = math.inf
        self.stats.bytes_lost += len(self._fifo)
        self._fifo.clear()
        self._event("reset: held")

    # --- internals ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _event(self, text: str) -> None:
        if self._on_event is not None:
            self._on_event(text)

    def _boot(self, at: float) -> Boot:
        boot = self.bootloader.boot(dfu_pin=self.dfu_pin)
        if boot.settings_writes:
            self._persist()
        self._deaf_until = at + self.timing.boot_time(boot)
        self._cpu_free = at
        self.stats.bytes_lost += len(self._fifo)
        self._fifo.clear()
        if boot.mode is Mode.DFU:
            timeout = self.timing.continuation if boot.continuation else self.timing.inactivity
            self._arm_inactivity(self._deaf_until + timeout)
        return boot

    def _reset(self, reason: ResetReason, at: float) -> None:
        if self._reset_held:
            return  # no reset source can boot a chip whose reset pin is held
        self._generation += 1
        self._cancel_inactivity()
        self.stats.resets[reason.value] += 1
        boot = self._boot(at)
        activated = f"activated {boot.activated}, " if boot.activated else ""
        timeout = " (continuation timeout)" if boot.continuation else ""
        self._event(f"reset: {reason.value}; {activated}{boot.mode.value} mode{timeout}")

    def _arm_inactivity(self, deadline: float) -> None:
        self._cancel_inactivity()
        if self._loop is not None:
            self._inactivity = self._loop.call_at(deadline, self._on_inactivity, deadline)

    def _cancel_inactivity(self) -> None:
        if self._inactivity is not None:
            self._inactivity.cancel()
            self._inactivity = None

    def _on_inactivity(self, deadline: float) -> None:
        self._inactivity = None
        self._reset(ResetReason.INACTIVITY, deadline)

    def _persist(self) -> None:
        if self.store is None:
            return
        try:
            self.store.save(self.bootloader.flash)
        except McuUpdaterError as exc:
            self.persist_error = exc
            self._event(f"error: {exc}")

    def _deliver(self, data: bytes) -> None:
        if self._port is None:
            self.stats.bytes_discarded += len(data)
        else:
            self._port.deliver(data)

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._now()
        if delay > _SLACK:
            await asyncio.sleep(delay)

    async def _wait_until(self, when: float) -> bool:
        """Sleep until ``when`` unless the host writes first; False if it did."""
        delay = when - self._now()
        if delay <= _SLACK:
            return True
        self._wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return True
        return False

    def _take(self) -> int:
        """Pop the next host byte off the line."""
        chunk, _ = self._rx[0]
        byte = chunk[self._rx_pos]
        self._rx_pos += 1
        self._backlog -= 1
        if self._rx_pos == len(chunk):
            self._rx.popleft()
            self._rx_pos = 0
            if self._port is not None:
                self._port.backlog_changed(self._backlog)
        return byte

    async def _run(self) -> None:
        """Alternate two events in time order: the next host byte lands, or the CPU takes one."""
        fifo = self._fifo
        steps = 0
        while True:
            steps += 1
            if steps % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            arrival = max(self._rx[0][1], self._line_free) + self.timing.byte_time if self._rx else None
            full = len(fifo) >= UARTE_FIFO
            if fifo and (arrival is None or arrival >= self._cpu_free or (full and self.flow_control)):
                # The CPU takes the FIFO head; with the FIFO full, flow control holds the host meanwhile.
                when = max(fifo[0][1], self._cpu_free)
                if not await self._wait_until(when) or not fifo:
                    continue  # the host wrote meanwhile (its bytes may land first), or a reset emptied it
                byte, _ = fifo.popleft()
                if full and self.flow_control:
                    self._line_free = max(self._line_free, when)  # RTS is asserted again
                await self._consume(byte, when)
            elif arrival is not None and not fifo and arrival >= self._cpu_free:
                byte = self._take()
                self._line_free = arrival
                await self._sleep_until(arrival)
                await self._consume(byte, arrival)
            elif arrival is not None and not full:
                fifo.append((self._take(), arrival))  # the CPU is stalled: wait in the UARTE FIFO
                self._line_free = arrival
            elif arrival is not None:
                self._take()
                self._line_free = arrival
                generation = self._generation
                await self._sleep_until(arrival)
                self.stats.bytes_lost += 1
                if generation == self._generation:
                    self._reset(ResetReason.UART_ERROR, arrival)
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _consume(self, byte: int, when: float) -> None:
        if when < self._deaf_until:
            self.stats.bytes_lost += 1
            return
        if self.bootloader.mode is Mode.APP:
            self.stats.bytes_ignored += 1
            return
        frames, images, inits = (
            self.stats.frames_in,
            len(self.bootloader.flash.images),
            self.stats.init_executes,
        )
        effects = self.bootloader.feed(bytes((byte,)))
        cursor, reset = self._apply(effects, when)
        if self.stats.init_executes != inits:
            self._event("init packet executed")
        for record in self.bootloader.flash.images[images:]:
            self._event(f"received {record.kind} v{record.version}, {record.size} B, sha256 {record.sha256}")
        if self.stats.frames_in != frames:
            for stall in self.faults.stalls:
                if stall.after_frame == self.stats.frames_in:
                    cursor += stall.seconds
        self._cpu_free = cursor
        at_offset = self.faults.power_cycle_at
        if (
            reset is None
            and at_offset is not None
            and not self._power_cycle_fired
            and self.bootloader.firmware_offset >= at_offset
        ):
            self._power_cycle_fired = True
            reset = ResetReason.POWER
        if reset is not None:
            generation = self._generation
            await self._sleep_until(cursor)
            if generation == self._generation:
                self._reset(reset, cursor)

    def _apply(self, effects: list[Effect], when: float) -> tuple[float, ResetReason | None]:
        """Run effects from time ``when``; returns when the CPU is free again and any reset due then."""
        cursor, reset = when, None
        for effect in effects:
            cursor += self.timing.stall(effect)
            if isinstance(effect, Send):
                self._send(effect.frame, cursor)
            elif isinstance(effect, SettingsWrite):
                self._persist()
            elif isinstance(effect, FeedTimer):
                self._arm_inactivity(cursor + self.timing.inactivity)
            elif isinstance(effect, Reset):
                self._cancel_inactivity()
                reset = effect.reason
        return cursor, reset

    def _send(self, frame: bytes, at: float) -> None:
        sent: bytes | None = frame
        delay = 0.0
        for index, fault in enumerate(self.faults.replies):
            if not fault.matches(frame):
                continue
            self._reply_hits[index] += 1
            if fault.occurrence is not None and fault.occurrence != self._reply_hits[index]:
                continue
            if fault.action == "drop":
                sent = None
            elif fault.action == "delay":
                delay += fault.seconds
            elif sent is not None:
                sent = sent[:-1] + bytes([sent[-1] ^ fault.xor])
        if sent is None or self._tx is None:
            return
        encoded = slip.encode(sent)
        start = max(at + delay, self._tx_free)
        self._tx_free = start + len(encoded) * self.timing.byte_time
        self.stats.bytes_out += len(encoded)
        self.stats.frames_out += 1
        self._tx.put(self._tx_free, encoded)

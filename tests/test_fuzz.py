"""Fuzzing every parser of untrusted bytes: only the project's own errors may ever come out.

Targets: the SLIP decoder as the link uses it, every request of the DFU client against arbitrary
replies, the init-packet decoder on protobuf-shaped input, the package loader on damaged genuine
nrfutil packages, and the configuration loader on arbitrary YAML documents and on a valid
configuration with any value replaced. (Byte-level fuzzing of each parser lives beside its unit tests.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import tempfile
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mcu_updater.config import parse_config
from mcu_updater.dfu.client import DfuClient, Timeouts
from mcu_updater.dfu.initpacket import FwType, _length_delimited, _varint, decode_init_packet
from mcu_updater.dfu.keys import load_public_key
from mcu_updater.dfu.link import MAX_REPLY_FRAME, DfuLink
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.dfu.slip import END, ESC, SlipDecoder, encode
from mcu_updater.dfu.transfer import ImageTransfer
from mcu_updater.dfu.wire import RESPONSE, ObjectType, OpCode
from mcu_updater.errors import ConfigError, McuUpdaterError, PackageError
from mcu_updater.updater import Options, UpdateRun
from tests.conftest import shared_fixture
from tests.packages import firmware, make_image, softdevice_firmware, write_package

FUZZ = settings(max_examples=200, deadline=None, database=None)

# --- SLIP as the link decodes it ------------------------------------------------------------------

slip_bytes = st.lists(
    st.one_of(st.sampled_from([END, ESC, 0xDC, 0xDD, RESPONSE]), st.integers(0, 255)), max_size=600
).map(bytes)


class _NullTransport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


@FUZZ
@given(stream=slip_bytes, cuts=st.lists(st.integers(0, 600), max_size=10))
def test_link_decoder_never_raises_and_never_holds_more_than_a_reply(stream: bytes, cuts: list[int]) -> None:
    async def feed() -> list[bytes]:
        frames: list[bytes] = []
        link = DfuLink()
        link.listen(frames.append, lambda error: None)
        link.connection_made(_NullTransport())
        bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
        for start, end in itertools.pairwise(bounds):
            link.data_received(stream[start:end])
            assert link._decoder.pending <= MAX_REPLY_FRAME
        return frames

    frames = asyncio.run(feed())
    assert all(0 < len(frame) <= MAX_REPLY_FRAME for frame in frames)


def test_endless_bytes_without_an_end_cost_bounded_memory() -> None:
    """A device that never sends END: 8 MiB go through the link, memory does not follow them."""

    async def flood() -> int:
        link = DfuLink()
        link.listen(lambda frame: None, lambda error: None)
        link.connection_made(_NullTransport())
        chunk = bytes(range(0x100)).replace(bytes([END]), b"") * 16
        tracemalloc.start()
        for _ in range(8 * 1024 * 1024 // len(chunk)):
            link.data_received(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert link._decoder.pending <= MAX_REPLY_FRAME
        return peak

    assert asyncio.run(flood()) < 64 * 1024


# --- the client against arbitrary replies --------------------------------------------------------

QUICK = Timeouts(reply=0.005, ping=0.005, ready=0.02, execute_command=0.005, execute_final=0.005)


class _Answering(asyncio.Transport):
    """Answers every request with the next of ``replies`` (raw line bytes), then stays silent."""

    def __init__(self, link: DfuLink, replies: list[bytes]) -> None:
        super().__init__()
        self._link = link
        self._replies = replies

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._replies:
            asyncio.get_running_loop().call_soon(self._link.data_received, self._replies.pop(0))

    def is_closing(self) -> bool:
        return True


Request = Callable[[DfuClient], Awaitable[Any]]


async def _write_with_prn(client: DfuClient) -> None:
    client.prn = 1
    await client.write(b"\x00" * 4)


REQUESTS: dict[str, Request] = {
    "ping": lambda client: client.ping(7),
    "wait_ready": lambda client: client.wait_ready(),
    "set_prn": lambda client: client.set_prn(1),
    "mtu": lambda client: client.mtu(),
    "select": lambda client: client.select(ObjectType.DATA),
    "create": lambda client: client.create(ObjectType.COMMAND, 128),
    "crc": lambda client: client.crc(),
    "execute": lambda client: client.execute(0.005),
    "fw_version": lambda client: client.fw_version(0),
    "hw_version": lambda client: client.hw_version(),
    "write_with_prn": _write_with_prn,
}


# Replies shaped like the real thing (right header, any opcode, result and fields) and raw noise.
reply_frames = st.one_of(
    st.builds(
        lambda opcode, result, tail: encode(bytes([RESPONSE, opcode, result]) + tail),
        st.one_of(st.sampled_from(list(OpCode)), st.integers(0, 255)),
        st.one_of(st.sampled_from([0x01, 0x0B]), st.integers(0, 255)),
        st.binary(max_size=24),
    ),
    slip_bytes,
)


@settings(max_examples=300, deadline=None, database=None)
@given(request=st.sampled_from(sorted(REQUESTS)), replies=st.lists(reply_frames, max_size=4))
def test_client_requests_raise_only_our_errors_whatever_the_device_answers(
    request: str, replies: list[bytes]
) -> None:
    async def exchange() -> None:
        link = DfuLink("fuzzed device")
        link.connection_made(_Answering(link, list(replies)))
        client = DfuClient(link, baud=1_000_000, timeouts=QUICK)
        with contextlib.suppress(McuUpdaterError):
            await REQUESTS[request](client)

    asyncio.run(exchange())


# Fields of a damaged reply: any bytes, or whole words with the values that break arithmetic.
u32 = st.one_of(st.sampled_from([0, 1, 3, 4095, 4096, 4097, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
damaged_fields = st.one_of(
    st.binary(max_size=16),
    st.lists(u32, min_size=1, max_size=3).map(lambda words: struct.pack(f"<{len(words)}I", *words)),
)


Damage = dict[tuple[int, int], tuple[int, bytes]]
"""Replies to replace, by (opcode, how many of its requests came before): (result, fields)."""
damage = st.dictionaries(
    st.tuples(st.sampled_from([op for op in OpCode if op != OpCode.WRITE]), st.integers(0, 3)),
    # Mostly SUCCESS: a damaged result is simply refused; damaged fields have to be interpreted.
    st.tuples(st.one_of(st.just(0x01), st.just(0x01), st.integers(0, 255)), damaged_fields),
    max_size=8,
)


class _PlausibleBootloader(asyncio.Transport):
    """Receives images like an SDK bootloader would, except for the replies ``damage`` replaces (right
    opcode, any result, any fields): damage that SLIP cannot detect. Drawn up front, so what hypothesis
    generates does not depend on timing."""

    def __init__(self, damage: Damage, inventory: list[bytes] | None = None) -> None:
        super().__init__()
        self._damage = damage
        self.inventory = inventory or []
        """FIRMWARE_VERSION reply fields per image index."""
        self._link = DfuLink()
        self._decoder = SlipDecoder(max_frame=1024)
        self._closing = False
        self._data = b""
        self._object = b""
        self._selected = ObjectType.COMMAND
        self.requests = 0
        self._seen: Counter[int] = Counter()

    def connect(self) -> DfuClient:
        """A fresh port to this device, as the updater opens one per image."""
        self._link = DfuLink("fuzzed device")
        self._link.connection_made(self)
        self._decoder = SlipDecoder(max_frame=1024)
        self._closing = False
        return DfuClient(self._link, baud=1_000_000, timeouts=QUICK)

    def _fields(self, request: bytes) -> bytes | None:
        """The undamaged reply's fields (None: no reply)."""
        held = self._data + self._object if self._selected == ObjectType.DATA else self._object
        match request[0]:
            case OpCode.SELECT:
                self._selected = ObjectType.DATA if request[1:2] == b"\x02" else ObjectType.COMMAND
                size = 256 if self._selected == ObjectType.COMMAND else 4096
                return struct.pack("<III", size, len(self._data), zlib.crc32(self._data))
            case OpCode.CREATE:
                self._selected = ObjectType.DATA if request[1:2] == b"\x02" else ObjectType.COMMAND
                self._object = b""
                if self._selected == ObjectType.COMMAND:
                    self._data = b""  # a new init packet starts a new image
            case OpCode.WRITE:
                self._object += request[1:]
                return None
            case OpCode.CRC_GET:
                return struct.pack("<II", len(held), zlib.crc32(held))
            case OpCode.EXECUTE if self._selected == ObjectType.DATA:
                self._data, self._object = held, b""
            case OpCode.PING:
                return request[1:2]
            case OpCode.MTU_GET:
                return struct.pack("<H", 131)
            case OpCode.FW_VERSION:
                index = request[1] if len(request) > 1 else 0
                return self.inventory[index] if index < len(self.inventory) else b"\xff" + bytes(12)
            case OpCode.ABORT:
                return None
        return b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # Bounded retries mean bounded work: a host loop that does not advance ends here.
        assert self.requests < REQUESTS_MAX, "the host keeps asking without getting anywhere"
        for request in self._decoder.feed(bytes(data)):
            fields = self._fields(request)
            result, fields = self._damage.get((request[0], self._seen[request[0]]), (0x01, fields))
            self._seen[request[0]] += 1
            self.requests += 1
            if fields is not None:
                answer = encode(bytes([RESPONSE, request[0], result]) + fields)
                asyncio.get_running_loop().call_soon(self._link.data_received, answer)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        asyncio.get_running_loop().call_soon(self._link.connection_lost, None)


REQUESTS_MAX = 3000
TRANSFERRED = firmware(3 * 4096 + 100, seed=5)


@settings(max_examples=150, deadline=None, database=None)
@given(damage=damage)
# Found by reading, kept as regressions: a data object size of 0 divided by zero or never advanced.
@example(damage={(OpCode.SELECT, 1): (0x01, struct.pack("<III", 0, 100, 0))})
@example(damage={(OpCode.SELECT, 1): (0x01, struct.pack("<III", 0, 0, 0))})
def test_image_transfer_raises_only_our_errors_whatever_the_replies_say(damage: Damage) -> None:
    async def transfer() -> None:
        device = _PlausibleBootloader(damage)
        image = ImageTransfer(device.connect(), "application", bytes(100), TRANSFERRED, mtu=131, retries=2)
        with contextlib.suppress(McuUpdaterError):
            async for _ in image.run():
                pass

    asyncio.run(transfer())


inventory_entries = st.lists(
    st.builds(
        lambda kind, version, address, length: struct.pack("<BIII", kind, version, address, length),
        st.one_of(st.sampled_from([0x00, 0x01, 0x02, 0xFF]), st.integers(0, 255)),
        u32,
        u32,
        u32,
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def softdevice_and_app(tmp_path_factory: pytest.TempPathFactory) -> DfuPackage:
    """A small SD+APP package: two sessions, a reconnection and an activation between them."""
    path = tmp_path_factory.mktemp("package") / "sd_app.zip"
    softdevice = make_image(FwType.SOFTDEVICE, softdevice_firmware(0x3000))
    application = make_image(FwType.APPLICATION, firmware(6000, seed=6), sd_req=(0xB7,))
    return load_package(write_package(path, softdevice, application))


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    damage=damage,
    inventory=inventory_entries,
    options=st.builds(Options, force=st.booleans(), allow_downgrade=st.booleans(), retries=st.just(2)),
)
def test_update_run_raises_only_our_errors_whatever_the_replies_say(
    softdevice_and_app: DfuPackage, damage: Damage, inventory: list[bytes], options: Options
) -> None:
    async def update() -> None:
        device = _PlausibleBootloader(damage, inventory)

        async def connect() -> DfuClient:
            return device.connect()

        with contextlib.suppress(McuUpdaterError):
            async for _ in UpdateRun(softdevice_and_app, connect, options).events():
                pass

    asyncio.run(update())


# --- init packets shaped like protobuf ------------------------------------------------------------


def _field(number: int, wire_type: int, value: int | bytes) -> bytes:
    key = _varint(number << 3 | wire_type)
    if wire_type == 0:
        assert isinstance(value, int)
        return key + _varint(value)
    if wire_type == 2:
        assert isinstance(value, bytes)
        return _length_delimited(number, value)
    assert isinstance(value, bytes)
    return key + value[: 8 if wire_type == 1 else 4].ljust(8 if wire_type == 1 else 4, b"\x00")


numbers = st.one_of(st.integers(1, 10), st.integers(0, 2**29 - 1))
scalar_fields = st.one_of(
    st.builds(_field, numbers, st.just(0), st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))),
    st.builds(_field, numbers, st.sampled_from([1, 5]), st.binary(max_size=8)),
    st.builds(_field, numbers, st.just(2), st.binary(max_size=70)),
    st.builds(_varint, st.integers(0, 2**32)),  # a lone key: wire types 3, 4, 6, 7
)
protobuf_like = st.recursive(
    st.lists(scalar_fields, max_size=6).map(b"".join),
    lambda inner: st.lists(
        st.one_of(scalar_fields, st.builds(_field, numbers, st.just(2), inner)), max_size=4
    ).map(b"".join),
    max_leaves=12,
)


@FUZZ
@given(raw=protobuf_like)
def test_init_packet_decoder_raises_only_package_errors(raw: bytes) -> None:
    with contextlib.suppress(PackageError):
        decode_init_packet(raw)


# --- the package loader on damaged genuine packages ----------------------------------------------

FIXTURE_ZIPS = (
    "app_v2_signed.zip",
    "app_v2_unsigned.zip",
    "bl_v2_signed.zip",
    "sd_app_signed.zip",
)
edits = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "truncate"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1,
    max_size=5,
)


@pytest.fixture(scope="module")
def fixture_zips() -> dict[str, bytes]:
    return {name: shared_fixture(name).read_bytes() for name in FIXTURE_ZIPS}


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(FIXTURE_ZIPS), edits=edits, near_the_end=st.booleans())
def test_damaged_nrfutil_packages_raise_only_package_errors(
    fixture_zips: dict[str, bytes], name: str, edits: list[tuple[str, int, int]], near_the_end: bool
) -> None:
    data = bytearray(fixture_zips[name])
    for op, position, value in edits:
        # Half the damage lands in the last KiB: the central directory and end record live there.
        at = (len(data) - 1 - position % 1024 if near_the_end else position) % len(data)
        if op == "truncate":
            del data[at:]
            if not data:
                break
        else:
            data[at] = data[at] ^ (1 << value % 8) if op == "flip" else value
    key = load_public_key(shared_fixture("key_a_public.pem"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(bytes(data))
        with contextlib.suppress(PackageError):
            load_package(path, public_key=key, require_signature=True, hw_version=52)


# --- the configuration loader on YAML documents -------------------------------------------------

KEYS = [
    "serial", "port", "baud", "flow_control", "firmware", "gpio", "backend", "chip", "reset", "dfu",
    "line", "active_low", "drive", "enter_bootloader", "return_to_app", "active", "hold", "button",
    "debounce", "target", "hw_version", "public_key", "bootloader", "policy", "downgrade",
    "require_signature", "timeouts", "reply", "ready", "notify", "logging", "level", "state_dir",
    "runtime_dir",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["/dev/serial0", "GPIO5", "20ms", "1.5s", "allow", "deny", "none", "gpiod", "."]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=20,
)
VALID: dict[str, Any] = {
    "serial": {"port": "/dev/serial0", "baud": 115200, "flow_control": True},
    "gpio": {"backend": "none", "reset": {"line": "GPIO5"}, "dfu": {"line": 6}},
    "button": {"line": "GPIO26", "debounce": "20ms"},
    "target": {"hw_version": 52, "bootloader": "sdk"},
    "firmware": ".",
    "policy": {"downgrade": "deny", "require_signature": False},
    "timeouts": {"reply": "0.5s", "ready": 10},
    "logging": {"level": "info"},
}


def _only_config_errors(document: object) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    with tempfile.TemporaryDirectory() as folder:
        try:
            parse_config(text, str(Path(folder) / "fuzz.yaml"))
        except ConfigError as error:
            message = str(error)
        else:
            return
    assert "\n" not in message
    assert "; expected " in message


@FUZZ
@given(document=documents)
def test_config_loader_raises_only_config_errors_on_any_document(document: object) -> None:
    _only_config_errors(document)


def _paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(node, dict):
        return [prefix]
    return [prefix] + [path for key, value in node.items() for path in _paths(value, (*prefix, key))]


def _replaced(node: object, path: tuple[str, ...], value: object) -> object:
    if not path:
        return value
    assert isinstance(node, dict)
    return {**node, path[0]: _replaced(node[path[0]], path[1:], value)}


VALID_PATHS = _paths(VALID)[1:]


def test_the_valid_document_is_valid() -> None:
    """Guards the next test: if VALID failed, every replacement would fail the same way."""
    with tempfile.TemporaryDirectory() as folder:
        assert parse_config(yaml.safe_dump(VALID), str(Path(folder) / "ok.yaml")).serial.baud == 115200


@FUZZ
@given(path=st.sampled_from(VALID_PATHS), value=documents)
def test_config_loader_raises_only_config_errors_when_any_value_is_replaced(
    path: tuple[str, ...], value: object
) -> None:
    _only_config_errors(_replaced(VALID, path, value))

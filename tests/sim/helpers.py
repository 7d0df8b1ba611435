"""Drivers for simulator tests: a synchronous host over the bootloader model, an asyncio frame host,
fixture packages and hand-made init packets."""

from __future__ import annotations

import asyncio
import json
import struct
import zipfile
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import serial
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mcu_updater.dfu.initpacket import FwType, HashType, InitCommand, encode_init_command, image_hash_field
from mcu_updater.dfu.signing import ecdsa_signer
from mcu_updater.dfu.slip import SlipDecoder, encode
from mcu_updater.sim.bootloader import Boot, Bootloader, Effect, Reset, ResetReason, Send
from mcu_updater.sim.state import FlashState
from mcu_updater.sim.validation import Profile
from tests.conftest import shared_fixture

CHUNK = 64
OBJECT = 4096
ORDER = ("softdevice_bootloader", "softdevice", "bootloader", "application")


@cache
def private_key() -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(shared_fixture("key_a.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def public_key() -> ec.EllipticCurvePublicKey:
    return private_key().public_key()


def h(text: str) -> bytes:
    """Bytes from spaced hex, as the protocol document writes them."""
    return bytes.fromhex(text)


def replies(effects: list[Effect]) -> list[bytes]:
    return [effect.frame for effect in effects if isinstance(effect, Send)]


@dataclass(frozen=True)
class Image:
    kind: str
    dat: bytes
    bin: bytes


@cache
def package(name: str) -> tuple[Image, ...]:
    """The images of a shared fixture zip, in the order nrfutil sends them."""
    with zipfile.ZipFile(shared_fixture(name)) as archive:
        manifest = json.loads(archive.read("manifest.json"))["manifest"]
        return tuple(
            Image(kind, archive.read(manifest[kind]["dat_file"]), archive.read(manifest[kind]["bin_file"]))
            for kind in ORDER
            if kind in manifest
        )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def init_command(image: bytes, **fields: Any) -> InitCommand:
    """An APPLICATION v2 command for ``image`` (hw 52, sd_req 0xAF, SHA-256); ``fields`` override."""
    base = InitCommand(
        fw_type=FwType.APPLICATION,
        fw_version=2,
        hw_version=52,
        sd_req=(0xAF,),
        sd_size=0,
        bl_size=0,
        app_size=len(image),
        hash_type=HashType.SHA256,
        hash=image_hash_field(image),
    )
    return replace(base, **fields)


def packet(
    command: InitCommand,
    *,
    signed: bool = True,
    key: ec.EllipticCurvePrivateKey | None = None,
    signature_type: int = 0,
    signature: bytes | None = None,
) -> bytes:
    """A ``.dat`` as nrfutil writes it, signed with key_a unless told otherwise."""
    init = encode_init_command(command)
    body = _field(1, b"\x08\x01" + _field(2, init))
    if not signed:
        return body
    if signature is None:
        signature = ecdsa_signer(key or private_key())(init)
    return _field(2, body + bytes([0x10, signature_type]) + _field(3, signature))


@dataclass
class Driver:
    """Drives the synchronous bootloader model like a host; boots the device again after each reset."""

    bootloader: Bootloader
    dfu_pin: bool = True
    resets: list[ResetReason] = field(default_factory=list)
    boots: list[Boot] = field(default_factory=list)

    @classmethod
    def fresh(
        cls,
        *,
        profile: Profile = Profile.SDK,
        flash: FlashState | None = None,
        keyless: bool = False,
    ) -> Driver:
        """A booted device; it verifies signatures with key_a unless ``keyless``."""
        driver = cls(Bootloader(flash, profile=profile, public_key=None if keyless else public_key()))
        driver.boots.append(driver.bootloader.boot(dfu_pin=True))
        return driver

    def feed(self, data: bytes) -> list[bytes]:
        return self._after(self.bootloader.feed(data))

    def send(self, frame: bytes) -> list[bytes]:
        """All replies to one frame (SLIP-encoded as a host would)."""
        return self._after(self.bootloader.request(frame))

    def one(self, frame: bytes) -> bytes:
        answers = self.send(frame)
        assert len(answers) == 1, f"{frame.hex(' ')} got {[a.hex(' ') for a in answers]}"
        return answers[0]

    def _after(self, effects: list[Effect]) -> list[bytes]:
        for effect in effects:
            if isinstance(effect, Reset):
                self.resets.append(effect.reason)
                self.boots.append(self.bootloader.boot(dfu_pin=self.dfu_pin))
        return replies(effects)

    def create(self, object_type: int, size: int) -> bytes:
        return self.one(struct.pack("<BBI", 0x01, object_type, size))

    def write(self, data: bytes) -> list[bytes]:
        replies_seen: list[bytes] = []
        for start in range(0, len(data), CHUNK):
            replies_seen += self.send(b"\x08" + data[start : start + CHUNK])
        return replies_seen

    def crc(self) -> tuple[int, int]:
        reply = self.one(b"\x03")
        assert reply[:3] == h("60 03 01"), reply.hex(" ")
        offset, crc = struct.unpack("<II", reply[3:])
        return offset, crc

    def select(self, object_type: int) -> tuple[int, int, int]:
        reply = self.one(bytes([0x06, object_type]))
        assert reply[:3] == h("60 06 01"), reply.hex(" ")
        max_size, offset, crc = struct.unpack("<III", reply[3:])
        return max_size, offset, crc

    def send_init(self, dat: bytes) -> bytes:
        """CREATE, WRITE and EXECUTE a command object; the EXECUTE reply."""
        assert self.create(1, len(dat)) == h("60 01 01")
        self.write(dat)
        return self.one(b"\x04")

    def send_firmware(self, firmware: bytes, start: int = 0) -> bytes:
        """Data objects from ``start`` to the end; the last EXECUTE reply (or a failing CREATE's)."""
        reply = b""
        for offset in range(start, len(firmware), OBJECT):
            chunk = firmware[offset : offset + OBJECT]
            reply = self.create(2, len(chunk))
            if reply != h("60 01 01"):
                return reply
            self.write(chunk)
            reply = self.one(b"\x04")
        return reply

    def send_image(self, dat: bytes, firmware: bytes) -> bytes:
        reply = self.send_init(dat)
        return self.send_firmware(firmware) if reply == h("60 04 01") else reply

    def send_package(self, name: str) -> bytes:
        """Every image of a fixture package until one fails; the last EXECUTE reply."""
        reply = b""
        for image in package(name):
            reply = self.send_image(image.dat, image.bin)
            if reply != h("60 04 01"):
                break
        return reply


class FrameHost(asyncio.Protocol):
    """A minimal asyncio host: SLIP frames out, decoded reply frames queued in."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.chunks: list[bytes] = []
        self.lost: list[Exception | None] = []
        self.paused = 0
        self.resumed = 0
        self._decoder = SlipDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        for frame in self._decoder.feed(data):
            self.frames.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(encode(frame))

    async def reply(self, within: float = 1.0) -> bytes:
        return await asyncio.wait_for(self.frames.get(), within)

    async def request(self, frame: bytes, within: float = 1.0) -> bytes:
        self.send(frame)
        return await self.reply(within)

    async def silent(self, within: float = 0.15) -> bool:
        """True if no reply arrives ``within`` seconds."""
        try:
            await asyncio.wait_for(self.frames.get(), within)
        except TimeoutError:
            return True
        return False


def serial_request(port: serial.Serial, frame: bytes) -> bytes:
    """One request over pyserial; the decoded reply, or b"" after the port's timeout."""
    port.write(encode(frame))
    decoder = SlipDecoder()
    while chunk := port.read(1):
        if frames := decoder.feed(chunk):
            return frames[0]
    return b""

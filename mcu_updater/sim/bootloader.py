"""A synchronous, I/O-free model of the nRF5 SDK 15.2 serial DFU bootloader (pca10040_uart, nRF52832).

Bytes go in (``feed``, or ``request`` for one decoded frame); a list of effects comes out: replies to
transmit, flash work that stalls the CPU, settings writes (the moments flash state changes), inactivity
timer restarts and resets. Time, the UART line and the state file belong to ``device.py``; this module
is the request handler, init-packet validation, settings and activation, byte for byte as
``../shared/docs/dfu-protocol.md`` describes them. After a ``Reset`` effect the model ignores input until
``boot`` runs again.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu import slip
from mcu_updater.dfu.initpacket import (
    SIGNATURE_SIZE,
    FwType,
    InitCommand,
    InitPacket,
    decode_init_packet,
    image_hash_field,
)
from mcu_updater.dfu.signing import verify_signature
from mcu_updater.dfu.wire import (
    RESPONSE,
    CrcReply,
    ExtError,
    FwVersionReply,
    HwVersionReply,
    ImageType,
    ObjectType,
    OpCode,
    ResultCode,
    SelectReply,
)
from mcu_updater.errors import PackageError
from mcu_updater.sim.state import (
    INIT_COMMAND_MAX_SIZE,
    SD_INFO_OFFSET,
    Bank,
    BankCode,
    FlashState,
    ImageRecord,
    Progress,
    SoftDevice,
)
from mcu_updater.sim.stats import Stats
from mcu_updater.sim.uart import MTU, Frame, UartReceiver
from mcu_updater.sim.validation import (
    SUCCESS,
    Profile,
    check_init,
    ext,
    image_kind,
    update_requires_softdevice,
    update_size,
)

FLASH_SIZE: Final = 0x80000
PAGE: Final = 0x1000
MBR_SIZE: Final = 0x1000
BOOTLOADER_START: Final = 0x78000
BOOTLOADER_REGION: Final = 0x6000
DFU_REGION_END: Final = BOOTLOADER_START - 3 * PAGE  # minus NRF_DFU_APP_DATA_AREA_SIZE
DATA_OBJECT_MAX_SIZE: Final = 4096
COPY_STEP_PAGES: Final = 8  # NRF_BL_FW_COPY_PROGRESS_STORE_STEP

HW_INFO: Final = HwVersionReply(
    part=0x52832, variant=int.from_bytes(b"AAE0", "big"), rom_size=524288, ram_size=65536, rom_page_size=4096
)

_OFFSET_CRC: Final = struct.Struct("<II")
_NO_INIT: Final = InitCommand(fw_type=None)
"""What nanopb leaves in the RAM packet when nothing was decoded since boot: all zero (type 0 = APP)."""

_BANK_KIND: Final = {
    BankCode.VALID_APP: FwType.APPLICATION,
    BankCode.VALID_SD: FwType.SOFTDEVICE,
    BankCode.VALID_BL: FwType.BOOTLOADER,
    BankCode.VALID_SD_BL: FwType.SOFTDEVICE_BOOTLOADER,
}
_KIND_BANK_CODE: Final = {kind: code for code, kind in _BANK_KIND.items()}


class Mode(enum.Enum):
    OFF = "off"
    """Reset and not booted yet (``boot`` has not run since)."""
    DFU = "dfu"
    APP = "app"
    """The application runs; the bootloader is not listening."""


class ResetReason(enum.Enum):
    ABORT = "abort"
    DFU_COMPLETE = "dfu-complete"
    INACTIVITY = "inactivity"
    UART_ERROR = "uart-error"
    POWER = "power-cycle"
    PIN = "pin-reset"


@dataclass(frozen=True)
class Send:
    """Transmit this reply (decoded; the transport SLIP-encodes it)."""

    frame: bytes


@dataclass(frozen=True)
class Erase:
    """Flash pages erased synchronously: the CPU stalls."""

    pages: int


@dataclass(frozen=True)
class Program:
    """Flash words written synchronously: the CPU stalls."""

    words: int


@dataclass(frozen=True)
class SettingsWrite:
    """The settings page (and backup) was written: flash state changed, ~182 ms of flash work."""


@dataclass(frozen=True)
class FeedTimer:
    """The DFU inactivity timer restarts."""


@dataclass(frozen=True)
class Reset:
    reason: ResetReason


Effect = Send | Erase | Program | SettingsWrite | FeedTimer | Reset


@dataclass(frozen=True)
class Boot:
    """What a boot did: where the device ended up and how much flash work activation took."""

    mode: Mode
    continuation: bool
    """DFU mode entered with the short continuation timeout (a SoftDevice was activated, app valid)."""
    activated: str | None
    copied_pages: int
    settings_writes: int
    boots: int


class _Activation(enum.Enum):
    NONE = enum.auto()
    SUCCESS = enum.auto()
    EXPECT_ADDITIONAL_UPDATE = enum.auto()


def _pages(size: int) -> int:
    return -(-size // PAGE)


def _align_page(address: int) -> int:
    return _pages(address) * PAGE


class Bootloader:
    """The device's bootloader: flash state that survives resets, RAM state that does not."""

    def __init__(
        self,
        flash: FlashState | None = None,
        *,
        profile: Profile = Profile.SDK,
        public_key: ec.EllipticCurvePublicKey | None = None,
        stats: Stats | None = None,
    ) -> None:
        """With no ``public_key`` the SDK profile still requires a well-formed 64-byte signature."""
        self.flash = flash if flash is not None else FlashState()
        self.profile = profile
        self.public_key = public_key
        self.stats = stats if stats is not None else Stats()
        self.memory = bytearray(b"\xff" * FLASH_SIZE)
        """Flash contents (in this process only: the state file keeps metadata, not image bytes)."""
        if self.flash.softdevice is not None:
            start = MBR_SIZE + SD_INFO_OFFSET
            info = self.flash.softdevice.info_struct()
            self.memory[start : start + len(info)] = info
        self.mode = Mode.OFF
        self._power_on()

    # --- life cycle -------------------------------------------------------------------------

    def _power_on(self) -> None:
        """RAM as the bootloader initialises it: settings loaded from flash, everything else cleared."""
        self.settings = copy.deepcopy(self.flash.settings)
        self._uart = UartReceiver()
        self._prn_target = 0
        self._prn_count = 0
        self._current_object = int(ObjectType.COMMAND)
        self._init_valid = False
        self._init: InitCommand = _NO_INIT
        self._firmware_start = 0
        self._firmware_size = 0

    def boot(self, *, dfu_pin: bool) -> Boot:
        """``nrf_bootloader_init`` after a reset (``dfu_pin``: P0.16 held low): activate, then DFU or app."""
        self._power_on()
        activation, activated, pages, writes = self._activate()
        boots = 1
        if activation is _Activation.SUCCESS:
            boots = 2  # activation resets once more; that boot finds nothing to activate
            self._power_on()
        continuation = activation is _Activation.EXPECT_ADDITIONAL_UPDATE
        if continuation or dfu_pin or not self.app_valid:
            self.mode = Mode.DFU
            self._restore_init_command()
        else:
            self.mode = Mode.APP
        return Boot(self.mode, continuation, activated, pages, writes, boots)

    @property
    def app_valid(self) -> bool:
        return self.settings.bank_0.code == BankCode.VALID_APP

    @property
    def wedged(self) -> bool:
        return self._uart.wedged

    @property
    def firmware_offset(self) -> int:
        return self.settings.progress.firmware_offset

    def _restore_init_command(self) -> None:
        """``nrf_dfu_validation_init``: an init packet stored at its EXECUTE is valid again after a reset."""
        progress = self.settings.progress
        if progress.command_size == 0 or self.settings.bank_1.size == 0:
            return
        try:
            packet = decode_init_packet(self.settings.init_command[: progress.command_size])
        except PackageError:
            return
        self._init = packet.command
        self._init_valid = True
        self._firmware_start = self._bank1_start()
        self._firmware_size = self.settings.bank_1.size

    def _activate(self) -> tuple[_Activation, str | None, int, int]:
        """``nrf_bootloader_fw_activate``: copy bank 1 into place; (result, kind, pages copied, writes)."""
        bank = self.settings.bank_1
        if bank.code == BankCode.INVALID:
            return _Activation.NONE, None, 0, 0
        src, size, sd_size = self.settings.progress.update_start_address, bank.size, self.settings.sd_size
        kind = _BANK_KIND[bank.code]
        segments = {
            FwType.APPLICATION: [(self._bank0_start(), src, size)],
            FwType.SOFTDEVICE: [(MBR_SIZE, src, size)],
            FwType.BOOTLOADER: [(BOOTLOADER_START, src, size)],
            FwType.SOFTDEVICE_BOOTLOADER: [
                (MBR_SIZE, src, sd_size),
                (BOOTLOADER_START, src + sd_size, size - sd_size),
            ],
        }[kind]
        copied = 0
        for dst, start, length in segments:
            if dst != start:
                self.memory[dst : dst + length] = self.memory[start : start + length]
                copied += _pages(length)
        if kind is FwType.APPLICATION:
            self.settings.bank_0 = Bank(BankCode.VALID_APP, size, bank.crc)
        elif bank.softdevice is not None:
            self.flash.softdevice = bank.softdevice
        self.settings.bank_1 = Bank()
        self.settings.write_offset = 0
        self._write_settings()
        for record in reversed(self.flash.images):
            if record.kind == image_kind(kind):
                record.activated = True
                break
        sd_update = kind in (FwType.SOFTDEVICE, FwType.SOFTDEVICE_BOOTLOADER)
        result = _Activation.EXPECT_ADDITIONAL_UPDATE if sd_update and self.app_valid else _Activation.SUCCESS
        # Each step of 8 copied pages stores progress in the settings, then completion writes them once more.
        return result, image_kind(kind), copied, -(-copied // COPY_STEP_PAGES) + 1

    def _write_settings(self) -> None:
        self.flash.settings = copy.deepcopy(self.settings)

    # --- input ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Effect]:
        """Bytes as the UART receives them; the effects of every frame they complete, in order."""
        effects: list[Effect] = []
        for byte in data:
            if self.mode is not Mode.DFU:
                break
            frame = self._uart.add(byte)
            if frame is not None:
                self._dispatch(frame, effects)
        return effects

    def request(self, frame: bytes) -> list[Effect]:
        """One decoded request, SLIP-framed as a host would send it (an empty one is a lone END)."""
        return self.feed(slip.encode(frame) if frame else bytes([slip.END]))

    # --- nrf_dfu_serial: parse at fixed offsets, PRN, reply serialization --------------------

    def _dispatch(self, frame: Frame, out: list[Effect]) -> None:
        self.stats.frames_in += 1
        op = frame.opcode
        if op == OpCode.SET_PRN:
            self._prn_target = frame.u16(1)
            self._prn_count = self._prn_target
        elif op == OpCode.CREATE:
            self._prn_count = self._prn_target
        if op in (OpCode.CREATE, OpCode.SELECT, OpCode.WRITE, OpCode.EXECUTE, OpCode.CRC_GET):
            self._object_request(frame, out)
            return
        if op == OpCode.ABORT:
            # The DFU_ABORTED observer resets the chip before a reply is ever queued.
            self.mode = Mode.OFF
            out.append(Reset(ResetReason.ABORT))
            return
        simple: dict[int, Callable[[], bytes]] = {
            OpCode.PROTOCOL_VERSION: lambda: b"\x01",
            OpCode.HW_VERSION: HW_INFO.to_payload,
            OpCode.FW_VERSION: lambda: self.firmware_version(frame.u8(1)).to_payload(),
            OpCode.PING: lambda: bytes([frame.u8(1)]),
            OpCode.SET_PRN: lambda: b"",
            OpCode.MTU_GET: lambda: struct.pack("<H", MTU),
        }
        payload = simple.get(op)
        if payload is None:
            self._send(out, op, int(ResultCode.OP_CODE_NOT_SUPPORTED))
        else:
            self._send(out, op, SUCCESS, payload())

    def _send(self, out: list[Effect], op: int, result: int, payload: bytes = b"") -> None:
        if result >= ResultCode.EXT_ERROR:
            tail = bytes([ResultCode.EXT_ERROR, result - ResultCode.EXT_ERROR])
        else:
            tail = bytes([result]) + (payload if result == SUCCESS else b"")
        out.append(Send(bytes([RESPONSE, op]) + tail))

    def _object_request(self, frame: Frame, out: list[Effect]) -> None:
        op = frame.opcode
        if op in (OpCode.SELECT, OpCode.CREATE):
            self._current_object = frame.u8(1)
        if self._current_object == ObjectType.COMMAND:
            result, payload = self._command_request(frame, out)
        elif self._current_object == ObjectType.DATA:
            if op == OpCode.EXECUTE:
                self._data_execute(out)
                return
            result, payload = self._data_request(frame, out)
        else:
            result, payload = int(ResultCode.INVALID_OBJECT), b""
        if op != OpCode.WRITE:
            self._send(out, op, result, payload)
            return
        # WRITEs are answered only as a packet receipt notification: a CRC_GET reply every N writes.
        self._prn_count = (self._prn_count - 1) & 0xFFFF
        if self._prn_target and not self._prn_count:
            self._prn_count = self._prn_target
            self._send(out, OpCode.CRC_GET, result, payload)

    # --- command object (init packet) ---------------------------------------------------------

    def _command_request(self, frame: Frame, out: list[Effect]) -> tuple[int, bytes]:
        progress = self.settings.progress
        op = frame.opcode
        if op == OpCode.CREATE:
            out.append(FeedTimer())  # DFU_STARTED fires before the size is even looked at
            size = frame.u32(2)
            if size == 0:
                return int(ResultCode.INVALID_PARAMETER), b""
            if size > INIT_COMMAND_MAX_SIZE:
                return int(ResultCode.INSUFFICIENT_RESOURCES), b""
            self._init_valid = False
            self.settings.write_offset = 0
            self.settings.progress = Progress(command_size=size)
            self.stats.objects_created["command"] += 1
            return SUCCESS, b""
        if op == OpCode.WRITE:
            length = frame.write_length
            if length + progress.command_offset > progress.command_size:
                return int(ResultCode.INVALID_PARAMETER), b""
            data = frame.buffer[1 : 1 + length]
            start = progress.command_offset
            command = self.settings.init_command
            self.settings.init_command = command[:start] + data + command[start + length :]
            progress.command_offset += length
            progress.command_crc = zlib.crc32(data, progress.command_crc)
        elif op == OpCode.EXECUTE:
            result = self._command_execute()
            if result == SUCCESS:
                self.stats.init_executes += 1
                self._write_settings()
                out.append(SettingsWrite())
            return result, b""
        offset_crc = (progress.command_offset, progress.command_crc)
        if op == OpCode.SELECT:
            return SUCCESS, SelectReply(INIT_COMMAND_MAX_SIZE, *offset_crc).to_payload()
        return SUCCESS, CrcReply(*offset_crc).to_payload()

    def _command_execute(self) -> int:
        """``nrf_dfu_validation_init_cmd_execute``: decode, signature, versions, size, flash room."""
        progress = self.settings.progress
        if progress.command_offset != progress.command_size:
            return int(ResultCode.OPERATION_NOT_PERMITTED)
        if self._init_valid:
            self._firmware_start = self._bank1_start()
            self._firmware_size = self.settings.bank_1.size
            return SUCCESS
        try:
            packet = decode_init_packet(self.settings.init_command[: progress.command_size])
        except PackageError:
            return int(ResultCode.INVALID_OBJECT)
        self._init = packet.command
        self._firmware_start = self._firmware_size = 0
        result = self._signature_check(packet) if self.profile.checks_signature else SUCCESS
        if result == SUCCESS:
            result = check_init(packet.command, self.settings, self.flash.softdevice, self.profile)
        if result != SUCCESS:
            return result
        # The SDK marks the packet valid here, before the size and room checks (a quirk it keeps).
        self._init_valid = True
        result, size = update_size(packet.command)
        if result != SUCCESS:
            return result
        if not self._cache_prepare(size, keep_softdevice=update_requires_softdevice(packet.command)):
            return int(ResultCode.INSUFFICIENT_RESOURCES)
        self._firmware_start = self._bank1_start()
        self._firmware_size = size
        self.settings.bank_1.size = size
        return SUCCESS

    def _signature_check(self, packet: InitPacket) -> int:
        """Signatures are required for every image type in the stock build."""
        if packet.signature is None:
            return ext(ExtError.SIGNATURE_MISSING)
        if packet.signature_type != 0:
            return ext(ExtError.WRONG_SIGNATURE_TYPE)
        if len(packet.signature) != SIGNATURE_SIZE:
            return int(ResultCode.OPERATION_FAILED)
        if self.public_key is not None and not verify_signature(
            packet.signature, packet.device_signed_bytes, self.public_key
        ):
            return int(ResultCode.INVALID_OBJECT)
        return SUCCESS

    def _cache_prepare(self, size: int, *, keep_softdevice: bool) -> bool:
        """``nrf_dfu_cache_prepare``: dual bank; delete the app, then the SoftDevice, only to make room."""
        if size <= DFU_REGION_END - self._bank1_start():
            return True
        if size > DFU_REGION_END - self._bank0_start():
            if keep_softdevice or self.flash.softdevice is None or size > DFU_REGION_END - MBR_SIZE:
                return False
            self._invalidate_softdevice()
        self.settings.bank_0 = Bank()
        self.settings.write_offset = 0
        return True

    def _invalidate_softdevice(self) -> None:
        """Zero the SoftDevice's magic; the app loses its address, bank 0 grows over the old SD."""
        softdevice = self.flash.softdevice
        if softdevice is None:
            return
        self.flash.softdevice = None
        start = MBR_SIZE + SD_INFO_OFFSET + 4
        self.memory[start : start + 4] = bytes(4)
        if self.settings.bank_0.code == BankCode.VALID_APP:
            self.settings.bank_0.code = BankCode.INVALID
        self.settings.bank_0.size += softdevice.end - MBR_SIZE

    def _bank0_start(self) -> int:
        softdevice = self.flash.softdevice
        return _align_page(softdevice.end) if softdevice is not None else MBR_SIZE

    def _bank1_start(self) -> int:
        return _align_page(self._bank0_start() + self.settings.bank_0.size)

    # --- data object (firmware) ---------------------------------------------------------------

    def _data_request(self, frame: Frame, out: list[Effect]) -> tuple[int, bytes]:
        progress = self.settings.progress
        op = frame.opcode
        if op == OpCode.CREATE:
            return self._data_create(frame.u32(2), out), b""
        if op == OpCode.WRITE:
            return self._data_write(frame, out)
        offset_crc = (progress.firmware_offset, progress.firmware_crc)
        if op == OpCode.SELECT:
            return SUCCESS, SelectReply(DATA_OBJECT_MAX_SIZE, *offset_crc).to_payload()
        return SUCCESS, CrcReply(*offset_crc).to_payload()

    def _data_create(self, size: int, out: list[Effect]) -> int:
        progress = self.settings.progress
        if not self._init_valid:
            return int(ResultCode.OPERATION_NOT_PERMITTED)
        if size == 0:
            return int(ResultCode.INVALID_PARAMETER)
        if size % PAGE and progress.firmware_offset_last + size != self._firmware_size:
            return int(ResultCode.INVALID_PARAMETER)
        if size > DATA_OBJECT_MAX_SIZE:
            return int(ResultCode.INSUFFICIENT_RESOURCES)
        if progress.firmware_offset_last + size > self._firmware_size:
            return int(ResultCode.OPERATION_NOT_PERMITTED)
        progress.data_object_size = size
        progress.firmware_crc = progress.firmware_crc_last
        progress.firmware_offset = progress.firmware_offset_last
        self.settings.write_offset = progress.firmware_offset_last
        start = self._firmware_start + progress.firmware_offset
        pages = _pages(size)
        self.memory[start : start + pages * PAGE] = b"\xff" * (pages * PAGE)
        out.append(Erase(pages))
        self.stats.objects_created["data"] += 1
        return SUCCESS

    def _data_write(self, frame: Frame, out: list[Effect]) -> tuple[int, bytes]:
        progress = self.settings.progress
        length = frame.write_length
        if not self._init_valid:
            return int(ResultCode.OPERATION_NOT_PERMITTED), b""
        if length + progress.firmware_offset - progress.firmware_offset_last > progress.data_object_size:
            return int(ResultCode.INVALID_PARAMETER), b""
        if length == 0 or length % 4:
            # nrf_fstorage_write refuses it; the handler returns early with SUCCESS and zeroed fields.
            return SUCCESS, _OFFSET_CRC.pack(0, 0)
        data = frame.buffer[1 : 1 + length]
        address = self._firmware_start + self.settings.write_offset
        # NVMC programming can only clear bits.
        old = int.from_bytes(self.memory[address : address + length], "little")
        self.memory[address : address + length] = (old & int.from_bytes(data, "little")).to_bytes(
            length, "little"
        )
        self.settings.write_offset += length
        progress.firmware_offset += length
        progress.firmware_crc = zlib.crc32(data, progress.firmware_crc)
        self.stats.image_bytes[image_kind(self._init.fw_type)] += length
        out.append(Program(length // 4))
        return SUCCESS, _OFFSET_CRC.pack(progress.firmware_offset, progress.firmware_crc)

    def _data_execute(self, out: list[Effect]) -> None:
        progress = self.settings.progress
        if progress.data_object_size != progress.firmware_offset - progress.firmware_offset_last:
            self._send(out, OpCode.EXECUTE, int(ResultCode.OPERATION_NOT_PERMITTED))
            return
        progress.data_object_size = 0
        progress.firmware_crc_last = progress.firmware_crc
        progress.firmware_offset_last = progress.firmware_offset
        if progress.firmware_offset != self._firmware_size:
            self._send(out, OpCode.EXECUTE, SUCCESS)
            out.append(FeedTimer())
            return
        # The reply is queued first; then settings are written and the device resets, pass or fail.
        self._send(out, OpCode.EXECUTE, self._post_validate())
        self._write_settings()
        self.mode = Mode.OFF
        out += [SettingsWrite(), Reset(ResetReason.DFU_COMPLETE)]

    def _post_validate(self) -> int:
        """``nrf_dfu_validation_post_data_execute`` on the whole received image."""
        init, start, size = self._init, self._firmware_start, self._firmware_size
        image = bytes(self.memory[start : start + size])
        fw_type = init.fw_type or FwType.APPLICATION
        if self.profile.checks_image_hash and (init.hash or b"").ljust(32, b"\0") != image_hash_field(image):
            result = ext(ExtError.VERIFICATION_FAILED)
        elif fw_type is FwType.APPLICATION:
            self._postvalidate_app(init)
            result = SUCCESS
        elif self._postvalidate_sd_bl(init, fw_type, start):
            result = SUCCESS
        else:
            result = int(ResultCode.INVALID_OBJECT)
            if fw_type & FwType.SOFTDEVICE and start == MBR_SIZE:
                self._invalidate_softdevice()  # it was received over the old SoftDevice
        settings = self.settings
        if result == SUCCESS:
            settings.bank_1.crc = settings.progress.firmware_crc
            settings.bank_1.size = size
            received_sd = settings.bank_1.softdevice
            version = received_sd.version if fw_type is FwType.SOFTDEVICE and received_sd else init.fw_version
            digest = hashlib.sha256(image).hexdigest()
            self.flash.images.append(ImageRecord(image_kind(fw_type), size, digest, version or 0))
        else:
            settings.bank_1 = Bank()
        settings.progress = Progress(update_start_address=start)
        settings.init_command = b"\xff" * INIT_COMMAND_MAX_SIZE
        settings.write_offset = 0
        return result

    def _records_version(self, init: InitCommand) -> bool:
        return not (self.profile.debug_build and init.is_debug)

    def _postvalidate_app(self, init: InitCommand) -> None:
        self.settings.bank_1.code = BankCode.VALID_APP
        self.settings.bank_0.code = BankCode.INVALID
        if not update_requires_softdevice(init):
            self._invalidate_softdevice()  # the app takes the SoftDevice's place at 0x1000
        if self._records_version(init):
            self.settings.app_version = init.fw_version or 0

    def _postvalidate_sd_bl(self, init: InitCommand, fw_type: FwType, start: int) -> bool:
        """False if a received SoftDevice's info struct is missing or smaller than its init says."""
        softdevice: SoftDevice | None = None
        if fw_type & FwType.SOFTDEVICE:
            softdevice = SoftDevice.from_image(bytes(self.memory[start : start + SD_INFO_OFFSET + 0x20]))
            if softdevice is None or softdevice.end < _align_page((init.sd_size or 0) + MBR_SIZE):
                return False
            current = self.flash.softdevice
            if current is None or current.version // 1_000_000 != softdevice.version // 1_000_000:
                self.settings.bank_0 = Bank()  # a new major SoftDevice may break the app
                self.settings.write_offset = 0
            self.settings.sd_size = init.sd_size or 0
        self.settings.bank_1.code = _KIND_BANK_CODE[fw_type]
        self.settings.bank_1.softdevice = softdevice
        if fw_type & FwType.BOOTLOADER and self._records_version(init):
            self.settings.bootloader_version = init.fw_version or 0
        return True

    # --- inventory ----------------------------------------------------------------------------

    def firmware_version(self, index: int) -> FwVersionReply:
        """The FIRMWARE_VERSION reply for image ``index`` (UNKNOWN past the last image)."""
        softdevice = self.flash.softdevice
        count = 1 + (softdevice is not None) + self.app_valid
        if index == 0:
            return FwVersionReply(
                ImageType.BOOTLOADER, self.settings.bootloader_version, BOOTLOADER_START, BOOTLOADER_REGION
            )
        if index == 1 and softdevice is not None:
            return FwVersionReply(ImageType.SOFTDEVICE, softdevice.version, MBR_SIZE, softdevice.end)
        if index < count:
            bank_0 = self.settings.bank_0
            return FwVersionReply(
                ImageType.APPLICATION, self.settings.app_version, self._bank0_start(), bank_0.size
            )
        return FwVersionReply(ImageType.UNKNOWN, 0, 0, 0)

    def inventory(self) -> list[FwVersionReply]:
        """Every FIRMWARE_VERSION entry a host would read, in index order."""
        replies: list[FwVersionReply] = []
        while (reply := self.firmware_version(len(replies))).image_type != ImageType.UNKNOWN:
            replies.append(reply)
        return replies

"""Init-command rules of ``nrf_dfu_ver_validation.c`` / ``nrf_dfu_validation.c``, as pure functions.

Results are ``nrf_dfu_result_t`` values; an extended error is encoded as ``0x0B + ext`` the way the SDK
does internally, and split into ``0B ext`` only when the reply is serialized.
"""

from __future__ import annotations

import enum
from typing import Final

from mcu_updater.dfu.initpacket import FwType, HashType, InitCommand
from mcu_updater.dfu.wire import ExtError, ResultCode
from mcu_updater.sim.state import Settings, SoftDevice

HW_VERSION: Final = 52
BOOTLOADER_SIZE: Final = 0x6000
SD_REQ_APP_OVERWRITES_SD: Final = 0x00

SUCCESS: Final = int(ResultCode.SUCCESS)


def ext(code: ExtError) -> int:
    return int(ResultCode.EXT_ERROR) + int(code)


class Profile(enum.Enum):
    """Which build of the bootloader the device runs."""

    SDK = "sdk"
    """The stock SDK 15.2 pca10040_uart example (release build)."""
    AZURE_SAMPLE = "azure-sample"
    """The Azure Sphere sample's debug build: no signature or image-hash check, versions compared ≠."""

    @property
    def checks_signature(self) -> bool:
        return self is Profile.SDK

    @property
    def checks_image_hash(self) -> bool:
        return self is Profile.SDK

    @property
    def debug_build(self) -> bool:
        """NRF_DFU_DEBUG_VERSION: an ``is_debug`` packet skips hw/sd/fw checks and records no version."""
        return self is Profile.AZURE_SAMPLE

    def version_ok(self, fw_type: FwType, fw_version: int, settings: Settings) -> bool:
        if fw_type in (FwType.APPLICATION, FwType.SOFTDEVICE):
            current, strict = settings.app_version, False
        else:
            current, strict = settings.bootloader_version, True
        if self is Profile.AZURE_SAMPLE:
            return fw_version != current
        return fw_version > current if strict else fw_version >= current


def image_kind(fw_type: FwType | None) -> str:
    """``application``, ``softdevice``, ``bootloader`` or ``softdevice_bootloader``."""
    return (fw_type or FwType.APPLICATION).name.lower()


def update_requires_softdevice(init: InitCommand) -> bool:
    return bool(init.sd_req) and init.sd_req[0] != SD_REQ_APP_OVERWRITES_SD


def sd_req_ok(init: InitCommand, softdevice: SoftDevice | None) -> bool:
    """The §8.3 table (``sd_req_ok`` with NRF_DFU_APP_DOWNGRADE_PREVENTION 1)."""
    req = init.sd_req
    if softdevice is not None:
        if update_requires_softdevice(init):
            return softdevice.fwid in req
        if init.fw_type is FwType.APPLICATION:
            return softdevice.fwid in req if len(req) > 1 else True
        return init.fw_type is not FwType.SOFTDEVICE
    if update_requires_softdevice(init):
        return False
    return init.fw_version is not None


def check_init(init: InitCommand, settings: Settings, softdevice: SoftDevice | None, profile: Profile) -> int:
    """``nrf_dfu_ver_validation_check``: type, hash type, then (unless debug) hw, sd_req, version."""
    if init.fw_type is None:
        return ext(ExtError.INIT_COMMAND_INVALID)
    if init.hash_type != HashType.SHA256:
        return ext(ExtError.WRONG_HASH_TYPE)
    if profile.debug_build and init.is_debug:
        return SUCCESS
    if init.hw_version is None:
        return ext(ExtError.INIT_COMMAND_INVALID)
    if init.hw_version != HW_VERSION:
        return ext(ExtError.HW_VERSION_FAILURE)
    if not sd_req_ok(init, softdevice):
        return ext(ExtError.SD_VERSION_FAILURE)
    if init.fw_version is not None:
        if not profile.version_ok(init.fw_type, init.fw_version, settings):
            return ext(ExtError.FW_VERSION_FAILURE)
    elif init.fw_type is not FwType.SOFTDEVICE:
        return ext(ExtError.INIT_COMMAND_INVALID)
    return SUCCESS


def update_size(init: InitCommand) -> tuple[int, int]:
    """``update_data_size_get``: (result, firmware bytes to receive)."""
    if init.fw_type is FwType.APPLICATION and init.app_size is not None:
        size, result = init.app_size, ext(ExtError.INIT_COMMAND_INVALID)
    else:
        size, result = 0, ext(ExtError.INIT_COMMAND_INVALID)
        type_bits = int(init.fw_type or 0)
        if type_bits & FwType.SOFTDEVICE and init.sd_size is not None:
            size = init.sd_size
        if type_bits & FwType.BOOTLOADER and init.bl_size is not None:
            if init.bl_size <= BOOTLOADER_SIZE:
                size += init.bl_size
            else:
                size, result = 0, int(ResultCode.INSUFFICIENT_RESOURCES)
    return (SUCCESS, size) if size else (result, 0)

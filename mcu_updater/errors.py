"""The one error hierarchy of mcu-updater.

Every error carries a one-line ``message`` (what is wrong) and a ``hint`` (what to do), and the
sysexits-style exit code the CLI returns for it. Classes are grouped by what the caller should do::

    McuUpdaterError
     ├── UsageError                  64  fix the command line
     ├── PackageError                65  fix or rebuild the package
     │    └── InputMissingError      66  a package or key file is not there
     ├── DeviceRejectedError         65  the bootloader said no (result / extended error in words)
     ├── PolicyRefusedError          65  our own policy said no (downgrade denied), nothing was sent
     ├── ProtocolError               75  the device answered something malformed or unexpected
     ├── TransientError              75  retryable failure that outlasted the retries
     │    └── ReplyTimeoutError      75  no reply in time (also a TimeoutError)
     ├── TargetNotAnsweringError     69  the bootloader never answered a ping
     ├── LinkError                   74  the serial port cannot be opened or was lost
     └── ConfigError                 78  fix the configuration
"""

from __future__ import annotations

from typing import ClassVar


class McuUpdaterError(Exception):
    """Root of every error mcu-updater raises on purpose."""

    exit_code: ClassVar[int] = 70

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(McuUpdaterError):
    exit_code = 64


class PackageError(McuUpdaterError):
    exit_code = 65


class InputMissingError(PackageError):
    """A file the user named (package, key) does not exist or cannot be read."""

    exit_code = 66


class DeviceRejectedError(McuUpdaterError):
    """The bootloader answered a request with a result other than SUCCESS."""

    exit_code = 65

    def __init__(self, message: str, hint: str, *, opcode: int, result: int, ext: int | None) -> None:
        super().__init__(message, hint)
        self.opcode = opcode
        self.result = result
        self.ext = ext


class PolicyRefusedError(McuUpdaterError):
    exit_code = 65


class ProtocolError(McuUpdaterError):
    exit_code = 75


class TransientError(McuUpdaterError):
    exit_code = 75


class ReplyTimeoutError(TransientError, TimeoutError):
    pass


class TargetNotAnsweringError(McuUpdaterError):
    exit_code = 69


class LinkError(McuUpdaterError):
    exit_code = 74


class ConfigError(McuUpdaterError):
    exit_code = 78

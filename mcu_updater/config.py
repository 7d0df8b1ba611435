"""The configuration file: YAML in, frozen dataclasses out, every mistake named by file, line and key.

The YAML is composed into nodes instead of loaded into dicts, so every value keeps its line and
duplicate keys (which PyYAML would silently merge) can be refused. Each error is a ConfigError (exit
78) on one line: ``FILE:LINE: key.path: what is wrong; expected what``. Unknown keys are errors too, so
a typo never falls back to a default unnoticed.

Relative paths start at the file's directory. Firmware entries and the public key must exist, and the
key is parsed (a private or wrong key fails at ``check-config``, not at the first update); packages are
not loaded and no device is opened: the daemon does that.
"""

from __future__ import annotations

import difflib
import enum
import re
import stat
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from mcu_updater.dfu.client import Timeouts
from mcu_updater.errors import ConfigError, McuUpdaterError
from mcu_updater.hw.specs import (
    DEFAULT_ENTER_BOOTLOADER,
    DEFAULT_RETURN_TO_APP,
    Backend,
    ButtonSpec,
    Drive,
    LineSpec,
    Step,
    TargetLine,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_PATH: Final = Path("/etc/mcu-updater/mcu-updater.yaml")
DEFAULT_CHIP: Final = "/dev/gpiochip0"
# The reference wiring (Raspberry Pi, BCM numbering): a minimal file needs no gpio section.
DEFAULT_RESET_LINE: Final = "GPIO5"
DEFAULT_DFU_LINE: Final = "GPIO6"

MAX_BAUD: Final = 1_000_000  # the nRF52's UARTE tops out at 1 Mbaud
MAX_HOLD: Final = 10.0
MAX_DEBOUNCE: Final = 1.0
MAX_TIMEOUT: Final = 600.0
MAX_U32: Final = 0xFFFF_FFFF
MAX_FILE_BYTES: Final = 1024 * 1024


class BootloaderProfile(enum.StrEnum):
    """Which build of the SDK 15.2 serial bootloader the target runs."""

    SDK = "sdk"
    """The stock secure bootloader: signed packages, no downgrades, same version accepted."""
    AZURE_SAMPLE = "azure-sample"
    """The Azure Sphere sample's build: no signature check, any version but the installed one."""


class Downgrade(enum.StrEnum):
    ALLOW = "allow"
    """Bring the target to the shipped version even if it is older (e.g. after a rootfs rollback)."""
    DENY = "deny"


class ReadyWhen(enum.StrEnum):
    """When the daemon sends READY=1 to systemd."""

    AFTER_FIRST_RUN = "after-first-run"
    AT_START = "at-start"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class SerialConfig:
    port: str
    baud: int = 115200
    flow_control: bool = True
    """RTS/CTS: the SDK bootloader is built with hardware flow control."""


@dataclass(frozen=True)
class GpioConfig:
    backend: Backend = Backend.GPIOD
    chip: str = DEFAULT_CHIP
    """The chip of every line that does not name its own."""
    reset: LineSpec = field(default_factory=lambda: LineSpec(DEFAULT_CHIP, DEFAULT_RESET_LINE))
    dfu: LineSpec = field(default_factory=lambda: LineSpec(DEFAULT_CHIP, DEFAULT_DFU_LINE))
    enter_bootloader: tuple[Step, ...] = DEFAULT_ENTER_BOOTLOADER
    return_to_app: tuple[Step, ...] = DEFAULT_RETURN_TO_APP


@dataclass(frozen=True)
class TargetConfig:
    hw_version: int | None = None
    """Refuse packages built for another hw_version; None accepts any."""
    public_key: Path | None = None
    bootloader: BootloaderProfile = BootloaderProfile.SDK


@dataclass(frozen=True)
class FirmwareConfig:
    paths: tuple[Path, ...]
    """Packages and directories of packages; each exists, none has been opened."""
    applied: bool = False
    """``firmware: applied``: the target is the package `mcu-updater apply` kept last, for OTA engines
    whose payload lives outside the root filesystem (Mender modules, ADU); ``paths`` is then empty."""


@dataclass(frozen=True)
class PolicyConfig:
    downgrade: Downgrade = Downgrade.ALLOW
    require_signature: bool = False
    """In a file, defaults to whether target.public_key is set."""


@dataclass(frozen=True)
class NotifyConfig:
    ready: ReadyWhen = ReadyWhen.AFTER_FIRST_RUN


@dataclass(frozen=True)
class LoggingConfig:
    level: LogLevel = LogLevel.INFO


@dataclass(frozen=True)
class MetricsConfig:
    textfile_dir: Path | None = None
    """node_exporter's textfile collector directory; None writes no metrics."""


@dataclass(frozen=True)
class ControlConfig:
    group: str | None = None
    """Members of this group may use the control socket too (mode 0660); None: root and owner only."""


@dataclass(frozen=True)
class Config:
    """One configuration file; its field names are the file's top-level keys."""

    serial: SerialConfig
    firmware: FirmwareConfig
    gpio: GpioConfig = GpioConfig()
    button: ButtonSpec | None = None
    target: TargetConfig = TargetConfig()
    policy: PolicyConfig = PolicyConfig()
    timeouts: Timeouts = field(default_factory=Timeouts)
    notify: NotifyConfig = NotifyConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    state_dir: Path = Path("/var/lib/mcu-updater")
    runtime_dir: Path = Path("/run/mcu-updater")


# --- where a value is, and how errors name it ----------------------------------------------------

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")
E = TypeVar("E", bound=enum.StrEnum)

_TAG: Final = "tag:yaml.org,2002:"
# Timestamps stay text: no setting is a date, and an unquoted date-like port name should read as written.
_TEXT_TAGS: Final = {_TAG + "str", _TAG + "timestamp"}
_CONSTRUCTED_TAGS: Final = {_TAG + "null", _TAG + "bool", _TAG + "int", _TAG + "float"}
_PLAIN_KEY: Final = re.compile(r"[\w-]{1,40}")
_SHOWN_MAX: Final = 60


def _printable(text: str) -> str:
    """Escape what would break the one-line message (a newline in a quoted value, say)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _describe(value: object) -> str:
    if isinstance(value, yaml.MappingNode):
        return "a mapping"
    if isinstance(value, yaml.SequenceNode):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return _clip(f"the number {value}")
    return _clip(repr(value))


def _did_you_mean(word: object, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1) if isinstance(word, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class _Doc:
    source: str
    base_dir: Path
    root: Path | None
    constructor: SafeConstructor = field(default_factory=SafeConstructor, compare=False)

    def error(self, line: int, key: str, problem: str, expected: str) -> ConfigError:
        where = f"{self.source}:{line}: {key}: " if key else f"{self.source}:{line}: "
        return ConfigError(_printable(where + problem), _printable(f"expected {expected}"))


@dataclass(frozen=True)
class _At:
    """A node of the document and the key path that leads to it."""

    doc: _Doc
    node: yaml.Node
    key: str = ""

    def fail(self, problem: str, expected: str) -> ConfigError:
        return self.doc.error(self.node.start_mark.line + 1, self.key, problem, expected)

    def child(self, key: str | int, node: yaml.Node | None = None) -> _At:
        """The value under ``key``; without ``node`` it stands at this node's place (a missing key)."""
        if isinstance(key, int):
            name = f"{self.key}[{key}]"
        else:
            shown = key if _PLAIN_KEY.fullmatch(key) else _clip(repr(key))
            name = f"{self.key}.{shown}" if self.key else shown
        return _At(self.doc, self.node if node is None else node, name)

    def absent(self, key: str) -> _At:
        """An empty mapping standing in for a section the file leaves out, so it gets its defaults."""
        empty = yaml.MappingNode(_TAG + "map", [], self.node.start_mark, self.node.end_mark)
        return self.child(key, empty)

    def scalar(self, expected: str) -> object:
        node = self.node
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(f"got {_describe(node)}", expected)
        if node.tag in _TEXT_TAGS:
            return str(node.value)
        if node.tag not in _CONSTRUCTED_TAGS:
            raise self.fail(f"the YAML tag {node.tag.replace(_TAG, '!!')} is not supported", expected)
        try:
            return self.doc.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, KeyError, IndexError):
            # An explicit tag on text that is not of that type (!!int fast, !!bool maybe).
            kind = node.tag.removeprefix(_TAG)
            raise self.fail(f"{_clip(repr(node.value))} is not a valid {kind}", expected) from None

    def shown(self) -> str:
        """What the node holds, for the "got ..." of a message."""
        if not isinstance(self.node, yaml.ScalarNode):
            return _describe(self.node)
        try:
            return _describe(self.scalar(""))
        except ConfigError:
            return _clip(repr(self.node.value))

    def items(self, expected: str) -> list[_At]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail(f"got {self.shown()}", expected)
        return [self.child(index, item) for index, item in enumerate(self.node.value)]

    def mapping(self, keys: Collection[str]) -> dict[str, _At]:
        """The entries of a mapping, in file order, after refusing duplicate keys and any not in ``keys``."""
        expected = f"a mapping with the keys {', '.join(keys)}"
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail(f"got {self.shown()}", expected)
        entries: dict[str, _At] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _At(self.doc, key_node, self.key).fail(f"a key is {_describe(key_node)}", expected)
            key = str(key_node.value)
            at_key = self.child(key, key_node)
            if key_node.tag == _TAG + "merge":
                raise at_key.fail("YAML merge keys are not supported", "every key written out")
            if key not in keys:
                raise at_key.fail(f"unknown key{_did_you_mean(key, keys)}", f"one of {', '.join(keys)}")
            if key in entries:
                raise at_key.fail(f"duplicate key (first on line {key_lines[key]})", "each key once")
            entries[key] = self.child(key, value_node)
            key_lines[key] = key_node.start_mark.line + 1
        return entries

    def find(self, key: str) -> _At:
        """Entry ``key`` of a mapping already read, or a stand-in at the mapping if the file omits it."""
        if isinstance(self.node, yaml.MappingNode):
            for key_node, value_node in self.node.value:
                if key_node.value == key:
                    return self.child(key, value_node)
        return self.child(key)


# --- kinds of values -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind(Generic[T]):
    """How to read one value, and what it should look like (the second half of every error)."""

    expected: str
    parse: Callable[[_At, str], T]

    def read(self, at: _At) -> T:
        return self.parse(at, self.expected)


def _boolean(at: _At, expected: str) -> bool:
    value = at.scalar(expected)
    if not isinstance(value, bool):
        raise at.fail(f"got {_describe(value)}", expected)
    return value


def _integer(low: int, high: int) -> _Kind[int]:
    def parse(at: _At, expected: str) -> int:
        value = at.scalar(expected)
        if isinstance(value, bool) or not isinstance(value, int):
            raise at.fail(f"got {_describe(value)}", expected)
        if not low <= value <= high:
            raise at.fail(f"{_describe(value)} is out of range", expected)
        return value

    return _Kind(f"an integer from {low} to {high}", parse)


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?) ?(ms|s)")
_PER_SECOND: Final = {"ms": 1000, "s": 1}  # dividing keeps 9ms == 0.009 (9 * 0.001 does not)


def _duration(high: float, *, zero_ok: bool) -> _Kind[float]:
    """Seconds written ``20ms``, ``1.5s`` or as a bare number; nothing else (no minutes, no sign)."""

    def parse(at: _At, expected: str) -> float:
        value = at.scalar(expected)
        seconds: float
        if isinstance(value, str) and (match := _DURATION.fullmatch(value)):
            seconds = float(match[1]) / _PER_SECOND[match[2]]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value  # compared as written: float() of a huge YAML integer would overflow
        else:
            raise at.fail(f"got {_describe(value)}", expected)
        above_low = seconds >= 0 if zero_ok else seconds > 0
        if not (above_low and seconds <= high):  # also refuses nan
            raise at.fail(f"{_describe(value)} is out of range", expected)
        return float(seconds)

    low = "from 0" if zero_ok else "more than 0"
    return _Kind(f"a duration like 20ms, 1.5s or a number of seconds, {low} up to {high:g} s", parse)


def _choice(choices: type[E]) -> _Kind[E]:
    names = [str(member.value) for member in choices]

    def parse(at: _At, expected: str) -> E:
        value = at.scalar(expected)
        if isinstance(value, str) and value in names:
            return choices(value)
        raise at.fail(f"got {_describe(value)}{_did_you_mean(value, names)}", expected)

    return _Kind(f"one of {', '.join(names)}", parse)


def _text(pattern: str, description: str) -> _Kind[str]:
    compiled = re.compile(pattern)

    def parse(at: _At, expected: str) -> str:
        value = at.scalar(expected)
        if isinstance(value, str) and compiled.fullmatch(value):
            return value
        raise at.fail(f"got {_describe(value)}", expected)

    return _Kind(description, parse)


# pyserial URLs (rfc2217://, socket://) are allowed; a bare "ttyUSB0" would open relative to the cwd.
_PORT: Final = _text(
    r"/\S+|[a-z][a-z0-9+.-]*://\S+", "an absolute device path like /dev/serial0 (or a pyserial URL)"
)
# A bare "gpiochip0" is neither a path nor (on any board we know) a label: catch it before run time.
_CHIP: Final = _text(
    r"/\S+|(?!gpiochip\d+\Z)[^/\s]+",
    "a chip path like /dev/gpiochip0 or a chip label like pinctrl-bcm2711 (gpiodetect lists both)",
)
_LINE_NAME: Final = re.compile(r"[!-~]{1,31}")  # printable ASCII without spaces, as the kernel allows


def _line(at: _At, expected: str) -> str | int:
    value = at.scalar(expected)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_U32:
            raise at.fail(f"{_describe(value)} is out of range", expected)
        return value
    if isinstance(value, str) and value.isdigit():
        raise at.fail(f"got the text {value!r}", f"an offset without quotes ({value}) or {expected}")
    if isinstance(value, str) and _LINE_NAME.fullmatch(value):
        return value
    raise at.fail(f"got {_describe(value)}", expected)


_LINE: Final = _Kind("a line name like GPIO5 (gpioinfo lists them) or an offset from 0", _line)
_BOOL: Final = _Kind("true or false", _boolean)


def _path(at: _At, expected: str) -> Path:
    value = at.scalar(expected)
    if not isinstance(value, str) or not value.strip():
        raise at.fail(f"got {_describe(value)}", expected)
    return at.doc.base_dir / value


def _probe(at: _At, path: Path, expected: str, *, directory_ok: bool) -> Path:
    """Check that ``path`` is a regular file (or directory); return where it was looked for."""
    probe = path if at.doc.root is None else at.doc.root / path.relative_to(path.anchor)
    try:
        mode = probe.stat().st_mode
    except FileNotFoundError:
        raise at.fail(f"{path} does not exist", expected) from None
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise at.fail(f"{path} cannot be checked ({reason})", expected) from None
    if not (stat.S_ISREG(mode) or (directory_ok and stat.S_ISDIR(mode))):
        raise at.fail(f"{path} is not a {'file or directory' if directory_ok else 'file'}", expected)
    return probe


def _public_key(at: _At, expected: str) -> Path:
    path = _path(at, expected)
    probe = _probe(at, path, expected, directory_ok=False)
    # Imported here so that configurations without a key never load the cryptography library.
    from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415

    try:
        load_public_key(probe)
    except McuUpdaterError as error:
        raise at.fail(error.message, expected) from None
    return path


_FIRMWARE_ENTRY: Final = (
    "a path to an nrfutil .zip package or a directory of them (versions come from the packages)"
)


APPLIED: Final = "applied"


def _firmware(at: _At, expected: str) -> FirmwareConfig:
    if isinstance(at.node, yaml.ScalarNode) and at.node.value == APPLIED:
        return FirmwareConfig(paths=(), applied=True)
    entries = at.items(expected) if isinstance(at.node, yaml.SequenceNode) else [at]
    if not entries:
        raise at.fail("is an empty list", expected)
    paths: list[Path] = []
    for entry in entries:
        path = _path(entry, _FIRMWARE_ENTRY)
        _probe(entry, path, _FIRMWARE_ENTRY, directory_ok=True)
        if path in paths:
            raise entry.fail(f"{path} is listed twice", "each package or directory once")
        paths.append(path)
    return FirmwareConfig(tuple(paths))


_FIRMWARE: Final = _Kind(
    f"{_FIRMWARE_ENTRY}, a list of them, or `{APPLIED}` (the package `mcu-updater apply` installed last)",
    _firmware,
)
_PUBLIC_KEY: Final = _Kind(
    "a P-256 public key file: PEM, or nrfutil's C array (dfu_public_key.c)", _public_key
)
_DIRECTORY: Final = _Kind("a directory path", _path)


def _section(cls: type[D], kinds: Mapping[str, _Kind[Any]], **defaults: Any) -> _Kind[D]:
    """A mapping read into ``cls``; keys it omits take ``defaults``, then the dataclass defaults."""
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]

    def parse(at: _At, expected: str) -> D:
        entries = at.mapping(kinds)
        values = {**defaults, **{key: kinds[key].read(value) for key, value in entries.items()}}
        for key in required:
            if key not in values:
                raise at.child(key).fail("is missing", kinds[key].expected)
        return cls(**values)

    return _Kind(f"a mapping with the keys {', '.join(kinds)}", parse)


def _line_spec(chip: str) -> _Kind[LineSpec]:
    kinds: dict[str, _Kind[Any]] = {
        "chip": _CHIP,
        "line": _LINE,
        "active_low": _BOOL,
        "drive": _choice(Drive),
    }
    return _section(LineSpec, kinds, chip=chip)


_STEP: Final = _section(
    Step,
    {
        "line": _choice(TargetLine),
        "active": _Kind("true (assert) or false (release)", _boolean),
        "hold": _duration(MAX_HOLD, zero_ok=True),
    },
)


def _sequence(dfu_active_at_boot: bool) -> _Kind[tuple[Step, ...]]:
    """Steps that end by releasing reset with DFU in the state the target must boot in."""
    dfu_state = "asserted" if dfu_active_at_boot else "released"

    def parse(at: _At, expected: str) -> tuple[Step, ...]:
        steps = tuple(_STEP.read(item) for item in at.items(expected))
        resets = [i for i, step in enumerate(steps) if step.line is TargetLine.RESET]
        if not resets or steps[resets[-1]].active or not any(steps[i].active for i in resets):
            raise at.fail(
                "does not end with a reset pulse",
                "a step {line: reset, active: true, hold: 20ms} and later {line: reset, active: false}",
            )
        dfus = [i for i, step in enumerate(steps) if step.line is TargetLine.DFU]
        if not dfus or dfus[-1] > resets[-1] or steps[dfus[-1]].active is not dfu_active_at_boot:
            active = str(dfu_active_at_boot).lower()
            raise at.fail(
                f"does not have dfu {dfu_state} when reset is released for the last time",
                f"a step {{line: dfu, active: {active}}} before the last {{line: reset, active: false}}",
            )
        return steps

    return _Kind("a list of steps like {line: reset, active: true, hold: 20ms}", parse)


def _same_line(a: LineSpec | ButtonSpec, b: LineSpec) -> bool:
    return (a.chip, a.line) == (b.chip, b.line)


def _gpio(at: _At, expected: str) -> GpioConfig:
    # The chip is read first because it is the default of every line's own chip.
    chip_at = at.mapping([f.name for f in fields(GpioConfig)]).get("chip")
    chip = DEFAULT_CHIP if chip_at is None else _CHIP.read(chip_at)
    kinds: dict[str, _Kind[Any]] = {
        "backend": _choice(Backend),
        "chip": _CHIP,
        "reset": _line_spec(chip),
        "dfu": _line_spec(chip),
        "enter_bootloader": _sequence(dfu_active_at_boot=True),
        "return_to_app": _sequence(dfu_active_at_boot=False),
    }
    defaults = {"reset": LineSpec(chip, DEFAULT_RESET_LINE), "dfu": LineSpec(chip, DEFAULT_DFU_LINE)}
    gpio = _section(GpioConfig, kinds, **defaults).read(at)
    if gpio.backend is Backend.GPIOD and _same_line(gpio.dfu, gpio.reset):
        raise at.find("dfu").fail("is the same line as gpio.reset", "two different lines")
    return gpio


def _button(gpio: GpioConfig) -> _Kind[ButtonSpec]:
    kinds: dict[str, _Kind[Any]] = {
        "chip": _CHIP,
        "line": _LINE,
        "active_low": _BOOL,
        "debounce": _duration(MAX_DEBOUNCE, zero_ok=True),
    }
    return _section(ButtonSpec, kinds, chip=gpio.chip)


_SERIAL: Final = _section(SerialConfig, {"port": _PORT, "baud": _integer(1, MAX_BAUD), "flow_control": _BOOL})
_TARGET: Final = _section(
    TargetConfig,
    {
        "hw_version": _integer(0, MAX_U32),
        "public_key": _PUBLIC_KEY,
        "bootloader": _choice(BootloaderProfile),
    },
)
_TIMEOUTS: Final = _section(
    Timeouts, {f.name: _duration(MAX_TIMEOUT, zero_ok=False) for f in fields(Timeouts)}
)
_NOTIFY: Final = _section(NotifyConfig, {"ready": _choice(ReadyWhen)})
_METRICS: Final = _section(MetricsConfig, {"textfile_dir": _DIRECTORY})
# Group names as groupadd takes them: up to 32 characters, no colon, no space.
_GROUP: Final = _text(
    r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?", "a group name like mcu-updater (getent group lists them)"
)
_CONTROL: Final = _section(ControlConfig, {"group": _GROUP})
_LOGGING: Final = _section(LoggingConfig, {"level": _choice(LogLevel)})


def _config(root: _At) -> Config:
    entries = root.mapping([f.name for f in fields(Config)])

    def section(key: str, kind: _Kind[T]) -> T:
        return kind.read(entries.get(key) or root.absent(key))

    serial = section("serial", _SERIAL)
    gpio = section("gpio", _Kind("a mapping", _gpio))
    button = _button(gpio).read(entries["button"]) if "button" in entries else None
    if button is not None and gpio.backend is Backend.GPIOD:
        for name, spec in (("reset", gpio.reset), ("dfu", gpio.dfu)):
            if _same_line(button, spec):
                raise entries["button"].find("line").fail(f"is also gpio.{name}'s line", "a line of its own")
    target = section("target", _TARGET)
    if "firmware" not in entries:
        raise root.child("firmware").fail("is missing", _FIRMWARE.expected)
    firmware = _FIRMWARE.read(entries["firmware"])
    policy_kinds: dict[str, _Kind[Any]] = {"downgrade": _choice(Downgrade), "require_signature": _BOOL}
    has_key = target.public_key is not None
    policy = section("policy", _section(PolicyConfig, policy_kinds, require_signature=has_key))
    if policy.require_signature and not has_key:
        at = root.find("policy").find("require_signature")
        expected = "target.public_key, or require_signature: false"
        raise at.fail("is true but target.public_key is not set", expected)
    return Config(
        serial=serial,
        firmware=firmware,
        gpio=gpio,
        button=button,
        target=target,
        policy=policy,
        timeouts=section("timeouts", _TIMEOUTS),
        notify=section("notify", _NOTIFY),
        logging=section("logging", _LOGGING),
        metrics=section("metrics", _METRICS),
        control=section("control", _CONTROL),
        state_dir=_DIRECTORY.read(entries["state_dir"]) if "state_dir" in entries else Config.state_dir,
        runtime_dir=(
            _DIRECTORY.read(entries["runtime_dir"]) if "runtime_dir" in entries else Config.runtime_dir
        ),
    )


# --- entry points --------------------------------------------------------------------------------


def parse_config(text: str, source: str, *, root: Path | None = None) -> Config:
    """Read a configuration; ``source`` names it in errors and its directory anchors relative paths.

    With ``root``, files the configuration names are looked for under that directory (a target root
    filesystem being built); the Config still holds the paths as the gateway will see them.
    """
    doc = _Doc(source, Path(source).parent.absolute(), root)
    valid_yaml = "valid YAML (check indentation, colons and quotes here and on the line before)"
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        problem = f"YAML syntax error: {error.problem or error.context}"
        raise doc.error(line, "", problem, valid_yaml) from None
    except ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise doc.error(line, "", f"YAML syntax error: {error.reason}", valid_yaml) from None
    except RecursionError:
        raise doc.error(1, "", "the YAML is nested too deeply", valid_yaml) from None
    if node is None:
        raise doc.error(1, "", "the file is empty", "a mapping with at least serial.port and firmware")
    return _config(_At(doc, node))


def load_config(path: Path, *, root: Path | None = None) -> Config:
    """Read and check the configuration file at ``path`` (see ``parse_config`` for ``root``)."""
    expected = f"expected a readable UTF-8 YAML file (the default is {DEFAULT_PATH})"
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        reason = error.strerror or error
        raise ConfigError(f"{path}: cannot read the configuration ({reason})", expected) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes, not a configuration file", expected)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line}: the file is not UTF-8 text", expected) from None
    return parse_config(text, str(path), root=root)


def check_config_main(path: Path, *, root: Path | None = None) -> int:
    """``mcu-updater check-config FILE``: a one-line summary and 0, or the error on stderr and 78."""
    try:
        config = load_config(path, root=root)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return error.exit_code
    count = len(config.firmware.paths)
    firmware = (
        "firmware: the package `apply` installed last"
        if config.firmware.applied
        else f"{count} firmware {'entry' if count == 1 else 'entries'}"
    )
    print(f"{path}: OK (port {config.serial.port}, gpio backend {config.gpio.backend}, {firmware})")
    return 0

"""The configuration file: the shipped example, defaults, one exact error per mistake, and fuzzing."""

from __future__ import annotations

import dataclasses
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcu_updater.config import (
    MAX_FILE_BYTES,
    BootloaderProfile,
    Config,
    ControlConfig,
    Downgrade,
    FirmwareConfig,
    GpioConfig,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    NotifyConfig,
    PolicyConfig,
    ReadyWhen,
    SerialConfig,
    TargetConfig,
    check_config_main,
    load_config,
    parse_config,
)
from mcu_updater.dfu.client import Timeouts
from mcu_updater.errors import ConfigError
from mcu_updater.hw.specs import (
    DEFAULT_ENTER_BOOTLOADER,
    DEFAULT_RETURN_TO_APP,
    Backend,
    ButtonSpec,
    Drive,
    LineSpec,
    Step,
)
from tests.conftest import shared_fixture

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "mcu-updater.yaml"
DEMO_KEY = shared_fixture("key_a_public.pem")
EXAMPLE_FIRMWARE = Path("/usr/share/mcu-updater/firmware")
EXAMPLE_KEY = Path("/etc/mcu-updater/dfu_public_key.pem")


def make_rootfs(root: Path) -> Path:
    """The files the example names, under ``root`` as they would be in the gateway's image."""
    (root / EXAMPLE_FIRMWARE.relative_to("/")).mkdir(parents=True)
    (root / EXAMPLE_KEY.relative_to("/")).parent.mkdir(parents=True)
    shutil.copy(DEMO_KEY, root / EXAMPLE_KEY.relative_to("/"))
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A config directory holding what the bad configs refer to: fw/, app.zip, key.pem, private.pem."""
    (tmp_path / "fw").mkdir()
    (tmp_path / "app.zip").write_bytes(b"PK")
    shutil.copy(DEMO_KEY, tmp_path / "key.pem")
    (tmp_path / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    return tmp_path


OK_SERIAL = "serial:\n  port: /dev/ttyUSB0\n"
OK = OK_SERIAL + "firmware: fw\n"


def write_config(directory: Path, text: str) -> Path:
    path = directory / "mcu-updater.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- the example ---------------------------------------------------------------------------------


def test_example_loads_with_the_documented_values(rootfs: Path) -> None:
    config = load_config(EXAMPLE, root=rootfs)

    chip = "/dev/gpiochip0"
    assert config.serial == SerialConfig(port="/dev/serial0", baud=115200, flow_control=True)
    assert config.gpio == GpioConfig(
        backend=Backend.GPIOD,
        chip=chip,
        reset=LineSpec(chip, "GPIO5", active_low=True, drive=Drive.OPEN_DRAIN),
        dfu=LineSpec(chip, "GPIO6", active_low=True, drive=Drive.OPEN_DRAIN),
        enter_bootloader=DEFAULT_ENTER_BOOTLOADER,
        return_to_app=DEFAULT_RETURN_TO_APP,
    )
    assert config.button == ButtonSpec(chip, "GPIO26", active_low=True, debounce=0.02)
    assert config.target == TargetConfig(
        hw_version=52, public_key=EXAMPLE_KEY, bootloader=BootloaderProfile.SDK
    )
    assert config.firmware == FirmwareConfig((EXAMPLE_FIRMWARE,))
    assert (config.policy.downgrade, config.policy.require_signature) == (Downgrade.ALLOW, True)
    assert config.timeouts == Timeouts(
        reply=0.5,
        page_erase=0.1,
        execute_command=2.0,
        execute_data=0.5,
        execute_final=3.0,
        ping=0.1,
        ready=10.0,
        post_validation=0.4,
        activation_per_page=0.2,
    )
    assert config.notify.ready is ReadyWhen.AFTER_FIRST_RUN
    assert config.logging.level is LogLevel.INFO
    assert config.metrics == MetricsConfig(Path("/var/lib/prometheus/node-exporter"))
    assert config.control == ControlConfig("mcu-updater")
    assert (config.state_dir, config.runtime_dir) == (Path("/var/lib/mcu-updater"), Path("/run/mcu-updater"))


def test_example_comments_every_line() -> None:
    bare = [line for line in EXAMPLE.read_text().splitlines() if line.strip() and "#" not in line]
    assert bare == []


def _schema_keys() -> set[str]:
    """Every key a file may use: the configuration dataclasses' field names."""
    classes = [
        Config, SerialConfig, GpioConfig, LineSpec, Step, ButtonSpec, TargetConfig, FirmwareConfig,
        PolicyConfig, Timeouts, NotifyConfig, LoggingConfig, MetricsConfig, ControlConfig,
    ]  # fmt: skip
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    undocumented = sorted(key for key in _schema_keys() if not re.search(rf"\b{key}:", text))
    # FirmwareConfig's fields are the value of firmware: itself (paths, or the word applied), not keys.
    assert undocumented == ["applied", "paths"]
    assert "firmware: applied" in text


# --- defaults and good values --------------------------------------------------------------------


def test_minimal_config_gets_the_defaults(workdir: Path) -> None:
    path = write_config(workdir, "serial:\n  port: /dev/ttyUSB0\nfirmware: fw\n")

    config = load_config(path)

    assert config == Config(serial=SerialConfig("/dev/ttyUSB0"), firmware=FirmwareConfig((workdir / "fw",)))
    assert config.serial.baud == 115200
    assert config.serial.flow_control is True
    assert config.gpio.backend is Backend.GPIOD
    assert config.gpio.reset == LineSpec("/dev/gpiochip0", "GPIO5", active_low=True, drive=Drive.OPEN_DRAIN)
    assert config.gpio.dfu == LineSpec("/dev/gpiochip0", "GPIO6", active_low=True, drive=Drive.OPEN_DRAIN)
    assert config.gpio.enter_bootloader == DEFAULT_ENTER_BOOTLOADER
    assert config.gpio.return_to_app == DEFAULT_RETURN_TO_APP
    assert config.button is None
    assert config.target == TargetConfig(hw_version=None, public_key=None, bootloader=BootloaderProfile.SDK)
    assert (config.policy.downgrade, config.policy.require_signature) == (Downgrade.ALLOW, False)
    assert config.timeouts == Timeouts()
    assert config.notify.ready is ReadyWhen.AFTER_FIRST_RUN
    assert config.logging.level is LogLevel.INFO
    assert config.state_dir == Path("/var/lib/mcu-updater")
    assert config.runtime_dir == Path("/run/mcu-updater")


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("20ms", 0.02),
        ("9ms", 0.009),
        ("250 ms", 0.25),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("0", 0.0),
        ("2", 2.0),
        ("0.25", 0.25),
        ("10s", 10.0),
    ],
)
def test_durations(workdir: Path, written: str, seconds: float) -> None:
    text = f"""\
        serial: {{port: /dev/ttyUSB0}}
        firmware: fw
        gpio:
          enter_bootloader:
            - {{line: dfu, active: true}}
            - {{line: reset, active: true, hold: {written}}}
            - {{line: reset, active: false}}
        """
    config = load_config(write_config(workdir, text))
    assert config.gpio.enter_bootloader[1].hold == seconds


def test_gpio_chip_is_the_default_for_every_line_and_a_line_may_name_its_own(workdir: Path) -> None:
    text = """\
        serial: {port: /dev/ttyUSB0}
        firmware: fw
        gpio:
          chip: pinctrl-rp1
          reset: {line: 5, active_low: false, drive: push-pull}
          dfu: {chip: /dev/gpiochip4, line: GPIO6}
        button: {line: GPIO26, debounce: 0}
        """
    config = load_config(write_config(workdir, text))
    assert config.gpio.reset == LineSpec("pinctrl-rp1", 5, active_low=False, drive=Drive.PUSH_PULL)
    assert config.gpio.dfu == LineSpec("/dev/gpiochip4", "GPIO6")
    assert config.button == ButtonSpec("pinctrl-rp1", "GPIO26", debounce=0.0)


def test_relative_paths_start_at_the_config_directory(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "etc").mkdir()
    text = """\
        serial: {port: /dev/ttyUSB0}
        firmware: [../fw, ../app.zip]
        target: {public_key: ../key.pem}
        state_dir: state
        """
    path = write_config(workdir / "etc", text)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    config = load_config(path)

    assert config.firmware.paths == (workdir / "etc/../fw", workdir / "etc/../app.zip")
    assert config.target.public_key == workdir / "etc/../key.pem"
    assert config.state_dir == workdir / "etc/state"


def test_a_public_key_makes_signatures_required_unless_the_policy_says_otherwise(workdir: Path) -> None:
    base = "serial: {port: /dev/ttyUSB0}\nfirmware: fw\ntarget: {public_key: key.pem}\n"
    assert load_config(write_config(workdir, base)).policy.require_signature is True
    relaxed = base + "policy: {require_signature: false, downgrade: deny}\n"
    policy = load_config(write_config(workdir, relaxed)).policy
    assert (policy.require_signature, policy.downgrade) == (False, Downgrade.DENY)


def test_date_like_values_read_as_written(workdir: Path) -> None:
    path = write_config(workdir, OK + "state_dir: 2024-01-01\n")
    assert load_config(path).state_dir == workdir / "2024-01-01"


@pytest.mark.parametrize("backend", ["none", "virtual"])
def test_line_clashes_matter_only_to_gpiod(workdir: Path, backend: str) -> None:
    text = f"""\
        serial: {{port: /dev/ttyUSB0}}
        firmware: fw
        gpio: {{backend: {backend}, dfu: {{line: GPIO5}}}}
        button: {{line: GPIO5}}
        """
    assert load_config(write_config(workdir, text)).gpio.backend is Backend(backend)


def test_parse_config_names_its_source_and_anchors_relative_paths_there(workdir: Path) -> None:
    source = str(workdir / "inline.yaml")
    config = parse_config("serial: {port: 'socket://localhost:7000'}\nfirmware: app.zip\n", source)
    assert config.firmware.paths == (workdir / "app.zip",)
    with pytest.raises(ConfigError, match=rf"^{re.escape(source)}:1: serial\.port: is missing"):
        parse_config("serial: {}\nfirmware: app.zip\n", source)


# --- one exact error per mistake -----------------------------------------------------------------


# (id, file text, "LINE: key" or "LINE" for the whole file, a phrase of the rest): the error starts with
# "FILE:LINE: key: " or "FILE:LINE: ".
# fmt: off
BAD_CONFIGS = [
    ("unknown key", OK_SERIAL + "  buad: 9600\nfirmware: fw\n", "3: serial.buad", "did you mean 'baud'?"),
    ("unknown section", OK + "loging:\n  level: info\n", "4: loging", "did you mean 'logging'?"),
    ("unknown timeout", OK + "timeouts: {redy: 5s}\n", "4: timeouts.redy", "did you mean 'ready'?"),
    ("duplicate section", OK + "serial:\n  baud: fast\n", "4: serial", "duplicate key (first on line 1)"),
    ("baud as text", "serial: {port: /dev/ttyUSB0, baud: fast}\nfirmware: fw\n",
     "1: serial.baud", "got 'fast'; expected an integer from 1 to 1000000"),
    ("negative baud", OK_SERIAL + "  baud: -9600\nfirmware: fw\n",
     "3: serial.baud", "-9600 is out of range; expected an integer from 1 to 1000000"),
    ("fractional baud", OK_SERIAL + "  baud: 9600.5\nfirmware: fw\n", "3: serial.baud", "got the number"),
    ("boolean as text", OK_SERIAL + "  flow_control: 'yes'\nfirmware: fw\n",
     "3: serial.flow_control", "expected true or false"),
    ("relative port", "serial: {port: ttyUSB0}\nfirmware: fw\n", "1: serial.port", "like /dev/serial0"),
    ("duplicate key", OK_SERIAL + "  port: /dev/ttyAMA0\nfirmware: fw\n",
     "3: serial.port", "duplicate key (first on line 2); expected each key once"),
    ("bad drive", OK + "gpio:\n  reset:\n    line: GPIO5\n    drive: open_drain\n",
     "7: gpio.reset.drive",
     "got 'open_drain' (did you mean 'open-drain'?); expected one of open-drain, push-pull"),
    ("bad backend", OK + "gpio: {backend: libgpiod}\n", "4: gpio.backend", "one of gpiod, none, virtual"),
    ("group with a space", OK + "control: {group: mcu updater}\n", "4: control.group", "a group name like"),
    ("group as a number", OK + "control:\n  group: 1000\n", "5: control.group", "got the number 1000"),
    ("metrics dir as a list", OK + "metrics: {textfile_dir: [a]}\n", "4: metrics.textfile_dir",
     "expected a directory path"),
    ("bare chip name", OK + "gpio: {chip: gpiochip0}\n", "4: gpio.chip", "/dev/gpiochip0"),
    ("negative line offset", OK + "gpio:\n  reset: {line: -1}\n",
     "5: gpio.reset.line", "out of range; expected a line name like GPIO5"),
    ("line as a boolean", OK + "gpio:\n  dfu: {line: yes}\n", "5: gpio.dfu.line", "true (a boolean)"),
    ("line with a space", OK + "gpio:\n  dfu: {line: GPIO 6}\n", "5: gpio.dfu.line", "got 'GPIO 6'"),
    ("quoted line offset", OK + "gpio:\n  dfu: {line: '6'}\n", "5: gpio.dfu.line", "without quotes (6)"),
    ("line missing", OK + "gpio:\n  reset:\n    drive: push-pull\n", "6: gpio.reset.line", "is missing"),
    ("same reset and dfu", OK + "gpio:\n  dfu: {line: GPIO5}\n", "5: gpio.dfu", "same line as gpio.reset"),
    ("step with unknown line", OK + "gpio:\n  enter_bootloader:\n    - {line: rst, active: true}\n",
     "6: gpio.enter_bootloader[0].line", "did you mean 'reset'?"),
    ("step without value", OK + "gpio:\n  enter_bootloader:\n    - {line: reset}\n",
     "6: gpio.enter_bootloader[0].active", "is missing; expected true (assert) or false (release)"),
    ("step with unknown key", OK + "gpio:\n  return_to_app:\n    - {line: reset, active: true, wait: 1s}\n",
     "6: gpio.return_to_app[0].wait", "expected one of line, active, hold"),
    ("bad duration unit", OK + "gpio:\n  return_to_app:\n    - {line: reset, active: true, hold: 20 msec}\n",
     "6: gpio.return_to_app[0].hold", "expected a duration like 20ms, 1.5s"),
    ("negative duration", OK + "gpio:\n  return_to_app:\n    - {line: reset, active: true, hold: -1}\n",
     "6: gpio.return_to_app[0].hold", "out of range"),
    ("hold too long", OK + "gpio:\n  return_to_app:\n    - {line: reset, active: true, hold: 11s}\n",
     "6: gpio.return_to_app[0].hold", "up to 10 s"),
    ("sequence as a mapping", OK + "gpio:\n  enter_bootloader: {line: reset}\n",
     "5: gpio.enter_bootloader", "got a mapping; expected a list of steps"),
    ("no reset pulse", OK + "gpio:\n  enter_bootloader:\n    - {line: dfu, active: true}\n",
     "6: gpio.enter_bootloader", "does not end with a reset pulse"),
    ("reset left asserted", OK + "gpio:\n  return_to_app:\n    - {line: dfu, active: false}\n"
        "    - {line: reset, active: true}\n",
     "6: gpio.return_to_app", "does not end with a reset pulse"),
    ("entry without dfu", OK + "gpio:\n  enter_bootloader:\n    - {line: reset, active: true}\n"
        "    - {line: reset, active: false}\n",
     "6: gpio.enter_bootloader", "dfu asserted"),
    ("entry releases dfu again", OK + "gpio:\n  enter_bootloader:\n    - {line: dfu, active: true}\n"
        "    - {line: dfu, active: false}\n    - {line: reset, active: true}\n"
        "    - {line: reset, active: false}\n",
     "6: gpio.enter_bootloader", "does not have dfu asserted when reset is released for the last time"),
    ("dfu asserted too late", OK + "gpio:\n  enter_bootloader:\n    - {line: reset, active: true}\n"
        "    - {line: reset, active: false}\n    - {line: dfu, active: true}\n",
     "6: gpio.enter_bootloader", "before the last {line: reset, active: false}"),
    ("return keeps dfu asserted", OK + "gpio:\n  return_to_app:\n    - {line: reset, active: true}\n"
        "    - {line: reset, active: false}\n",
     "6: gpio.return_to_app", "dfu released"),
    ("debounce too long", OK + "button: {line: GPIO26, debounce: 2s}\n", "4: button.debounce", "up to 1 s"),
    ("button without line", OK + "button:\n  debounce: 10ms\n", "5: button.line", "is missing"),
    ("button on the reset line", OK + "button: {line: GPIO5}\n", "4: button.line", "gpio.reset's line"),
    ("zero timeout", OK + "timeouts: {ready: 0}\n", "4: timeouts.ready", "more than 0 up to 600 s"),
    ("hw_version as text", OK + "target: {hw_version: 52a}\n",
     "4: target.hw_version", "from 0 to 4294967295"),
    ("bad profile", OK + "target: {bootloader: azure_sample}\n",
     "4: target.bootloader", "did you mean 'azure-sample'?"),
    ("missing public key", OK + "target:\n  public_key: nokey.pem\n",
     "5: target.public_key", "nokey.pem does not exist"),
    ("private key", OK + "target: {public_key: private.pem}\n", "4: target.public_key", "private key"),
    ("public key is a directory", OK + "target: {public_key: fw}\n", "4: target.public_key", "is not a file"),
    ("signature without key", OK + "policy:\n  require_signature: true\n",
     "5: policy.require_signature", "target.public_key is not set"),
    ("bad downgrade", OK + "policy: {downgrade: no}\n", "4: policy.downgrade", "false (a boolean)"),
    ("bad notify", OK + "notify: {ready: after_first_run}\n",
     "4: notify.ready", "did you mean 'after-first-run'?"),
    ("bad log level", OK + "logging: {level: verbose}\n", "4: logging.level", "debug, info, warning, error"),
    ("state_dir as number", OK + "state_dir: 5\n", "4: state_dir", "expected a directory path"),
    ("missing serial.port", "serial:\n  baud: 9600\nfirmware: fw\n", "2: serial.port", "is missing"),
    ("missing serial section", "firmware: fw\n", "1: serial.port", "is missing"),
    ("serial as a list", "serial:\n  - /dev/ttyUSB0\nfirmware: fw\n",
     "2: serial", "got a list; expected a mapping with the keys port, baud, flow_control"),
    ("empty section", "serial:\nfirmware: fw\n", "1: serial", "got nothing (null)"),
    ("missing firmware", OK_SERIAL, "1: firmware", "is missing"),
    ("nonexistent firmware", OK_SERIAL + "firmware: nothere\n", "3: firmware", "nothere does not exist"),
    ("nonexistent firmware entry", OK_SERIAL + "firmware:\n  - fw\n  - missing.zip\n",
     "5: firmware[1]", "missing.zip does not exist"),
    ("empty firmware list", OK_SERIAL + "firmware: []\n", "3: firmware", "is an empty list"),
    ("firmware listed twice", OK_SERIAL + "firmware: [fw, fw]\n", "3: firmware[1]", "listed twice"),
    ("firmware with a version", OK_SERIAL + "firmware:\n  - {path: app.zip, version: 3}\n",
     "4: firmware[0]", "versions come from the packages"),
    ("unsupported tag", "serial: {port: !env SERIAL}\nfirmware: fw\n", "1: serial.port", "tag !env"),
    ("bad explicit int", OK_SERIAL + "  baud: !!int fast\nfirmware: fw\n",
     "3: serial.baud", "'fast' is not a valid int"),
    ("merge key in a section", OK + "gpio:\n  reset: &r {line: GPIO5}\n  dfu:\n    <<: *r\n",
     "7: gpio.dfu.'<<'", "merge keys are not supported"),
    ("list key", OK + "? [a, b]\n: 1\n", "4", "a key is a list"),
]
BAD_FILES = [
    ("empty file", "", "1", "the file is empty"),
    ("comments only", "# nothing yet\n\n", "1", "the file is empty"),
    ("list instead of mapping", "- serial\n- firmware\n", "1", "got a list; expected a mapping with"),
    ("text instead of mapping", "hello\n", "1", "got 'hello'"),
    ("bad indentation", OK_SERIAL + "   baud: 1\nfirmware: fw\n", "3", "YAML syntax error"),
    ("unclosed flow", OK + "gpio: {chip: a\nstate_dir: x\n", "5", "YAML syntax error"),
    ("tab indentation", "serial:\n\tport: /dev/ttyUSB0\n", "2", "YAML syntax error"),
    ("control character", OK + "state_dir: a\x07b\n", "4", "YAML syntax error"),
    ("two documents", OK + "---\n" + OK, "4", "YAML syntax error"),
    ("nested too deeply", "serial: " + "[" * 5000 + "]" * 5000 + "\n", "1", "nested too deeply"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "where", "phrase"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CONFIGS + BAD_FILES],
)
def test_bad_config(workdir: Path, text: str, where: str, phrase: str) -> None:
    path = workdir / "mcu-updater.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:{where}: "), message
    assert phrase in message
    assert "; expected " in message
    assert "\n" not in message
    assert caught.value.exit_code == 78


def test_bad_cases_are_many_and_distinct() -> None:
    ids = [case[0] for case in BAD_CONFIGS + BAD_FILES]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (None, "cannot read the configuration (No such file or directory)"),
        (b"serial: {port: /dev/ttyUSB0}\nfirmware: \xff\n", ":2: the file is not UTF-8 text"),
        (b"#" * (MAX_FILE_BYTES + 1), "larger than"),
    ],
    ids=["missing", "not utf-8", "too big"],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, phrase: str) -> None:
    path = tmp_path / "mcu-updater.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(phrase)) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))


def test_a_quoted_newline_cannot_break_the_one_line_error(workdir: Path) -> None:
    path = write_config(workdir, 'serial: {port: /dev/ttyUSB0}\nfirmware: "no\\nfile"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:2: firmware: ")
    assert "\n" not in str(caught.value)
    assert "no\\nfile" in str(caught.value)


# --- check-config --------------------------------------------------------------------------------


def test_check_config_ok(rootfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(EXAMPLE, root=rootfs) == 0
    out, err = capsys.readouterr()
    assert out == f"{EXAMPLE}: OK (port /dev/serial0, gpio backend gpiod, 1 firmware entry)\n"
    assert err == ""


def test_check_config_counts_entries(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        workdir, "serial: {port: /dev/ttyS1}\ngpio: {backend: none}\nfirmware: [fw, app.zip]\n"
    )
    assert check_config_main(path) == 0
    assert capsys.readouterr().out == f"{path}: OK (port /dev/ttyS1, gpio backend none, 2 firmware entries)\n"


def test_firmware_applied_names_no_path(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(workdir, "serial: {port: /dev/ttyS1}\ngpio: {backend: none}\nfirmware: applied\n")
    assert load_config(path).firmware == FirmwareConfig(paths=(), applied=True)
    assert check_config_main(path) == 0
    assert "firmware: the package `apply` installed last" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "first_line"),
    [
        (
            OK_SERIAL + "  buad: 1\nfirmware: fw\n",
            "{path}:3: serial.buad: unknown key (did you mean 'baud'?)",
        ),
        (None, "{path}: cannot read the configuration"),
    ],
    ids=["bad key", "missing file"],
)
def test_check_config_error(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str | None, first_line: str
) -> None:
    path = workdir / "mcu-updater.yaml"
    if text is not None:
        path.write_text(text)
    assert check_config_main(path) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(first_line.format(path=path))
    assert err.count("\n") == 1


# --- fuzzing: whatever the text, the only failure is a ConfigError ------------------------------

YAML_TOKENS = [
    "serial", "port", "firmware", "gpio", "reset", "dfu", "line", "active", "hold", "button", "target",
    "timeouts", "policy", ":", ": ", "\n", "\n  ", "\n    ", " ", "-", "- ", "[", "]", "{", "}", ",", "'",
    '"', "#", "&a ", "*a", "!!int ", "!!str ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ",
    "!!python/object ", "!x ", "<<: ", "? ", "|", ">", "~", "null", "yes", "-1", "0x1F", ".inf", ".nan",
    "1e999", "9" * 30, "20ms", "1.5s", "GPIO5", "/dev/serial0", "fw", "\t", "---", "...", "%YAML 1.1",
    "\x00", "\\", "é", "\ufeff",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


def _only_config_errors(text: str, source: str, root: Path | None = None) -> None:
    try:
        parse_config(text, source, root=root)
    except ConfigError as error:
        message = str(error)
    else:
        return
    assert message.startswith(f"{source}:")
    assert "; expected " in message
    assert "\n" not in message


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), yamlish))
def test_fuzz_text_raises_only_config_errors(text: str) -> None:
    _only_config_errors(text, "/nonexistent/fuzz.yaml")


EXAMPLE_LINES = EXAMPLE.read_text().splitlines()
MUTATIONS = ["delete", "duplicate", "indent", "dedent", "replace value", "insert", "swap"]


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        token = draw(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=8)))
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "delete":
            del lines[index]
        elif mutation == "duplicate":
            lines.insert(index, line)
        elif mutation == "indent":
            lines[index] = "  " + line
        elif mutation == "dedent":
            lines[index] = line.removeprefix("  ")
        elif mutation == "replace value" and ": " in line:
            key, _, _ = line.partition(": ")
            lines[index] = f"{key}: {token}"
        elif mutation == "insert":
            at = draw(st.integers(0, len(line)))
            lines[index] = line[:at] + token + line[at:]
        else:
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], line
        if not lines:
            break
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fuzz_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("rootfs"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_example())
def test_fuzz_mutated_example_raises_only_config_errors(fuzz_rootfs: Path, text: str) -> None:
    _only_config_errors(text, str(EXAMPLE), fuzz_rootfs)


def test_unmutated_example_passes_the_fuzz_harness(fuzz_rootfs: Path) -> None:
    # Guards the harness: if the example itself failed, every mutation would fail the same way.
    assert (
        parse_config("\n".join(EXAMPLE_LINES), str(EXAMPLE), root=fuzz_rootfs).serial.port == "/dev/serial0"
    )

"""mcu-updater: keeps a wired nRF52's firmware up to date from an embedded Linux gateway."""

__version__ = "0.1.0"

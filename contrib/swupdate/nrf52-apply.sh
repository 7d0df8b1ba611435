#!/bin/sh
# SWUpdate shellscript: runs before ("preinst") and after ("postinst") the images are written, with the
# sw-description's data (where the package was written) as $2. After: install it on the nRF52; a
# non-zero exit fails the update. MCU_UPDATER_CONFIG overrides the configuration path.
if [ "$1" = postinst ]; then
    exec mcu-updater apply --package "$2" --config "${MCU_UPDATER_CONFIG:-/etc/mcu-updater/mcu-updater.yaml}"
fi
exit 0

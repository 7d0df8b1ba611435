from mcu_updater.cli import main

raise SystemExit(main())

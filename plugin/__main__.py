"""Allow `python -m plugin`."""

from plugin.cli import main

raise SystemExit(main())

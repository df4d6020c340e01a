from xds.cli import main

raise SystemExit(main())

from qasr.daemon.cli import main

raise SystemExit(main())

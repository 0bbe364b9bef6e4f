from explore.cli.main import main

raise SystemExit(main())

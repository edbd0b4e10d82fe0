from cds.cli import main

raise SystemExit(main())

from npasr.cli import main

raise SystemExit(main())
